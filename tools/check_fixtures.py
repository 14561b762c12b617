"""Independent numpy re-implementation of pytorch-grad-cam 1.5.7 GradCAM, checked
against the fixtures in tests/fixtures (the algorithm a Rust port must follow).

Usage: /opt/ref/bin/python tools/check_fixtures.py
"""
import sys, json, numpy as np, torch, cv2
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'fixtures')
import detweights, make_fixtures as mf
from safetensors import safe_open
from safetensors.numpy import load_file
torch.set_num_threads(2)

def bilinear(img, W, H):
    # half-pixel centres, edge clamp (cv2 INTER_LINEAR upsampling), float32 weights
    h, w = img.shape
    def coords(dst, src):
        scale = src / dst
        f = (np.arange(dst) + 0.5) * scale - 0.5
        i0 = np.floor(f).astype(int); fr = (f - i0).astype(np.float32)
        fr[i0 < 0] = 0; i0[i0 < 0] = 0
        i1 = np.minimum(i0 + 1, src - 1)
        hi = i0 >= src - 1
        i0[hi] = src - 1; fr[hi] = 0
        return i0, i1, fr
    y0, y1, fy = coords(H, h); x0, x1, fx = coords(W, w)
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bot = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return (top * (1 - fy)[:, None] + bot * fy[:, None]).astype(np.float32)

def norm(img):
    img = img - np.min(img)
    return img / (np.float32(1e-7) + np.max(img))

for case in ["resnet18_layer4","resnet18_layer3","resnet50_layer4","vgg11_bn_features","vgg11_bn_mid","resnet18_negative"]:
    p=os.path.join(FIX, f"{case}.safetensors")
    with safe_open(p,"np") as f: meta=f.metadata()
    t=load_file(p)
    arch=meta["arch"]; seed=int(meta["seed"]); K=int(meta["num_classes"])
    ov={k[len("override."):]: torch.from_numpy(v) for k,v in t.items() if k.startswith("override.")}
    m=mf.build(arch,K,seed,ov or None)
    assert json.loads(meta["tensors"])==detweights.tensor_list(m)
    x=torch.from_numpy(t["input"])
    assert torch.equal(mf.normalize(t["input_u8"]), x)
    mod=m.get_submodule(meta["layer"])
    acts={}
    def hook(_m,_i,o):
        acts["a"]=o; o.register_hook(lambda g: acts.__setitem__("g",g))
    h=mod.register_forward_hook(hook)
    N,T,H,W=t["cams"].shape
    maxdiff=0; maxdiff_cv=0; exact=0; ovl_bad=0; ovl_max=0
    for tt in range(T):
        m.zero_grad(); out=m(x)
        assert np.abs(out.detach().numpy()-t["logits"]).max()<1e-5
        loss=sum(out[n,int(t["targets"][n,tt])] for n in range(N)); loss.backward()
        A=acts["a"].detach().numpy(); G=acts["g"].numpy()
        wts=G.mean(axis=(2,3))
        cam=np.maximum((wts[:,:,None,None]*A).sum(1),0)
        for n in range(N):
            lo=norm(cam[n])
            r_np=bilinear(lo,W,H); r_cv=cv2.resize(lo,(W,H))
            maxdiff_cv=max(maxdiff_cv,np.abs(r_np-r_cv).max())
            final=norm(r_np)
            ref=t["cams"][n,tt]
            d=np.abs(final-ref).max(); maxdiff=max(maxdiff,d); exact+=int(d==0)
            mine=mf.show_cam_on_image(t["input_u8"][n].astype(np.float32)/np.float32(255), final, use_rgb=True)
            dd=np.abs(mine.astype(int)-t["overlays"][n,tt]); ovl_bad+=int((dd>0).sum()); ovl_max=max(ovl_max,int(dd.max()))
            ov_me=mf.show_cam_on_image(t["input_u8"][n].astype(np.float32)/np.float32(255), ref, use_rgb=True)
            assert np.array_equal(ov_me,t["overlays"][n,tt])
            assert d < 1e-6, d
    h.remove()
    c=t["cams"]
    print(f"{case}: ours-vs-pgc max|d|={maxdiff:.2e} exact={exact}/{N*T}  np-bilinear-vs-cv2={maxdiff_cv:.2e}  "
          f"cam max={c.max():.9f} min={c.min()} neg-zero={np.signbit(c).any()} overlay max={t['overlays'].max()} "
          f"max idx {np.uint8(255*c).max()} overlay-from-our-cam: {ovl_bad} channel values differ, max {ovl_max}")
