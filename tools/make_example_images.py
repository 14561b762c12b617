"""Write the example photos in examples/photos/ from scikit-image's bundled data.

Only images that ship inside the scikit-image wheel are used (no network).
Each is resized (Lanczos) so its longer side is 384 px and saved as JPEG q=90. They are what
the README's main command explains with the bundled ImageNet model (scikit-image's astronaut
photo is left out: EfficientNet-Lite0 calls it a barbell).
"""
import os

import numpy as np
from PIL import Image
from skimage import data

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "photos")
LONG_SIDE = 384

IMAGES = {
    "cat.jpg": data.chelsea,
    "coffee.jpg": data.coffee,
    "rocket.jpg": data.rocket,
}


def main():
    os.makedirs(OUT, exist_ok=True)
    total = 0
    for fname, fn in IMAGES.items():
        arr = np.asarray(fn())
        im = Image.fromarray(arr).convert("RGB")
        w, h = im.size
        s = LONG_SIDE / max(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.LANCZOS)
        path = os.path.join(OUT, fname)
        im.save(path, quality=90, optimize=True)
        size = os.path.getsize(path)
        total += size
        print(f"{fname}: {im.size[0]}x{im.size[1]} {size} bytes")
    print(f"total {total} bytes")
    assert total < 1_500_000


if __name__ == "__main__":
    main()
