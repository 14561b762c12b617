// The page side of `tools/web.sh bench`: gradcam-wgpu's engine and a TF.js Grad-CAM of the same
// torchvision ResNet-18 (the same safetensors file), in one page. TF.js is the global `tf`
// (page.html loads tf.min.js and the WebGPU backend from web/bench/node_modules).
import init, { Engine } from '/pkg/gradcam_wgpu.js';

const SIZE = 224;
const MEAN = [0.485, 0.456, 0.406]; // ImageNet, as the engine normalises a torchvision state dict
const STD = [0.229, 0.224, 0.225];
const OPTIONS = { method: 'gradcam', layer: 'layer4', target: 'top1' };

let engine;
let model;
let net; // the TF.js ResNet-18's weights
const images = [];

// Safetensors: u64 LE header length, JSON header, then the tensors (F32 here; the BN counters,
// I64, are skipped).
function parseSafetensors(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'F32') continue;
    const [a, b] = t.data_offsets;
    const copy = bytes.slice(8 + n + a, 8 + n + b); // aligned for Float32Array
    out[name] = { shape: t.shape, data: new Float32Array(copy.buffer) };
  }
  return out;
}

// conv (OIHW -> HWIO) with its eval-mode BatchNorm folded in: w * g / sqrt(v + eps), the bias
// b - m * g / sqrt(v + eps); what TF.js's converter does with a frozen graph's BN.
function convBn(st, conv, bn) {
  const w = st[`${conv}.weight`];
  const [o, i, kh, kw] = w.shape;
  const g = st[`${bn}.weight`].data, b = st[`${bn}.bias`].data;
  const m = st[`${bn}.running_mean`].data, v = st[`${bn}.running_var`].data;
  const hwio = new Float32Array(w.data.length);
  const bias = new Float32Array(o);
  for (let oc = 0; oc < o; oc++) {
    const s = g[oc] / Math.sqrt(v[oc] + 1e-5);
    bias[oc] = b[oc] - m[oc] * s;
    for (let ic = 0; ic < i; ic++)
      for (let y = 0; y < kh; y++)
        for (let x = 0; x < kw; x++)
          hwio[((y * kw + x) * i + ic) * o + oc] = w.data[((oc * i + ic) * kh + y) * kw + x] * s;
  }
  return { w: tf.tensor4d(hwio, [kh, kw, i, o]), b: tf.tensor1d(bias) };
}

function buildNet(st) {
  const p = { conv1: convBn(st, 'conv1', 'bn1'), blocks: [] };
  for (let l = 1; l <= 4; l++) {
    for (let k = 0; k < 2; k++) {
      const q = `layer${l}.${k}`;
      p.blocks.push({
        stride: l > 1 && k === 0 ? 2 : 1,
        c1: convBn(st, `${q}.conv1`, `${q}.bn1`),
        c2: convBn(st, `${q}.conv2`, `${q}.bn2`),
        down: st[`${q}.downsample.0.weight`] ? convBn(st, `${q}.downsample.0`, `${q}.downsample.1`) : null,
      });
    }
  }
  const fc = st['fc.weight']; // [1000, 512] -> [512, 1000]
  p.fcW = tf.transpose(tf.tensor2d(fc.data, fc.shape));
  p.fcB = tf.tensor1d(st['fc.bias'].data);
  return p;
}

// Conv + bias (+ ReLU) as one fused op, as tf.layers' Conv2D and converted graph models run it.
const conv = (x, c, stride, pad, relu) =>
  tf.fused.conv2d({ x, filter: c.w, strides: stride, pad, bias: c.b, activation: relu ? 'relu' : 'linear' });

// NHWC input -> layer4's activations A [N, 7, 7, 512].
function features(x) {
  let y = conv(x, net.conv1, 2, 3, true);
  y = tf.maxPool(y, 3, 2, 1);
  for (const b of net.blocks) {
    const o = conv(conv(y, b.c1, b.stride, 1, true), b.c2, 1, 1, false);
    y = tf.relu(tf.add(o, b.down ? conv(y, b.down, b.stride, 0, false) : y));
  }
  return y;
}

// avgpool + fc: A -> logits [N, 1000].
const head = (a) => tf.add(tf.matMul(tf.mean(a, [1, 2]), net.fcW), net.fcB);

function preprocess(list) {
  const x = tf.stack(list.map((im) => tf.browser.fromPixels(im))).toFloat().div(255);
  return x.sub(tf.tensor1d(MEAN)).div(tf.tensor1d(STD));
}

// Grad-CAM the way TF.js Grad-CAM code computes it (tfjs-examples' visualize-convnet): forward to
// the target layer's activations A, tf.grad of the top-1 logit through the head w.r.t. A,
// alpha = the gradient's spatial mean, cam = relu(sum_k alpha_k A_k); min-max per image, a
// bilinear upsample to 224 (half-pixel centres, as cv2.resize) and min-max again, in
// pytorch-grad-cam's and the engine's order. The maps and classes are read back, as the
// engine's are.
// pytorch-grad-cam's scale_cam_image: (x - min) / (1e-7 + (max - min)) per image.
function minmax(cam) {
  const lo = cam.min([1, 2, 3], true);
  return cam.sub(lo).div(cam.max([1, 2, 3], true).sub(lo).add(1e-7));
}

function tfjsGraph(list) {
  return tf.tidy(() => {
    const a = features(preprocess(list));
    const logits = head(a);
    const classes = tf.argMax(logits, 1);
    const mask = tf.oneHot(classes, logits.shape[1]).toFloat();
    const grad = tf.grad((t) => tf.sum(tf.mul(head(t), mask)))(a);
    const alpha = tf.mean(grad, [1, 2], true);
    let cam = tf.relu(tf.sum(tf.mul(a, alpha), 3, true)); // [N, 7, 7, 1]
    cam = minmax(cam);
    cam = minmax(tf.image.resizeBilinear(cam, [SIZE, SIZE], false, true));
    return { cam, classes };
  });
}

export async function tfjsGradcam(list) {
  const out = tfjsGraph(list);
  const [maps, classes] = await Promise.all([out.cam.data(), out.classes.data()]);
  out.cam.dispose();
  out.classes.dispose();
  return { maps, classes };
}

export async function engineGradcam(list) {
  const r = await engine.explain(model, list.length === 1 ? list[0] : list, OPTIONS);
  const all = Array.isArray(r) ? r : [r];
  return { maps: all.map((e) => e.maps), classes: all.map((e) => e.classes[0]), timings: all[0].timings };
}

// Test images: the cat photo cut at 8 horizontal offsets, each drawn at 224 x 224.
async function loadImages(url) {
  const blob = await (await fetch(url)).blob();
  const bm = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const side = Math.min(bm.width, bm.height);
  const ctx = new OffscreenCanvas(SIZE, SIZE).getContext('2d', { willReadFrequently: true });
  for (let i = 0; i < 8; i++) {
    const sx = Math.round(((bm.width - side) * i) / 7);
    ctx.drawImage(bm, sx, 0, side, side, 0, 0, SIZE, SIZE);
    images.push(ctx.getImageData(0, 0, SIZE, SIZE));
  }
}

// Loads both sides and checks that they are the same network: the engine's top-5 classes and
// logits against TF.js's on each test image.
export async function setup(weightsUrl, imageUrl) {
  const bytes = new Uint8Array(await (await fetch(weightsUrl)).arrayBuffer());
  await init();
  engine = await Engine.create();
  model = await engine.loadModel(bytes);
  await tf.setBackend('webgpu');
  await tf.ready();
  net = buildNet(parseSafetensors(bytes));
  await loadImages(imageUrl);

  const check = { images: images.length, top1Equal: 0, top5Equal: 0, maxAbsDiff: 0, maxRelDiff: 0 };
  const ours = await engine.explain(model, images, { ...OPTIONS, target: 'top5' });
  const logits = tf.tidy(() => head(features(preprocess(images))));
  const all = await logits.array();
  logits.dispose();
  for (let i = 0; i < images.length; i++) {
    const theirs = all[i];
    const order = theirs.map((v, c) => [v, c]).sort((p, q) => q[0] - p[0]).slice(0, 5);
    const scale = Math.max(...theirs.map(Math.abs));
    if (ours[i].classes[0] === order[0][1]) check.top1Equal++;
    if (order.every(([, c], k) => ours[i].classes[k] === c)) check.top5Equal++;
    ours[i].classes.forEach((c, k) => {
      const d = Math.abs(ours[i].logits[k] - theirs[c]);
      check.maxAbsDiff = Math.max(check.maxAbsDiff, d);
      check.maxRelDiff = Math.max(check.maxRelDiff, d / scale);
    });
  }
  // The two sides' Grad-CAM maps on the batch (same top-1 class where top1Equal).
  const a = await engineGradcam(images);
  const b = await tfjsGradcam(images);
  let mapDiff = 0;
  a.maps.forEach((m, i) => m.forEach((v, p) => (mapDiff = Math.max(mapDiff, Math.abs(v - b.maps[i * m.length + p])))));
  check.maxMapDiff = mapDiff;

  const info = (await navigator.gpu.requestAdapter())?.info ?? {};
  return {
    check,
    backend: tf.getBackend(),
    tfjsVersion: tf.version.tfjs,
    adapter: { vendor: info.vendor, architecture: info.architecture, device: info.device,
      description: info.description, fallback: info.isFallbackAdapter },
    userAgent: navigator.userAgent,
  };
}

// One timed call of one side on a batch of n images: wall ms from the call to the maps on the host.
export async function timeOnce(side, n) {
  const list = images.slice(0, n);
  const t0 = performance.now();
  const r = await (side === 'engine' ? engineGradcam(list) : tfjsGradcam(list));
  const ms = performance.now() - t0;
  return { ms, timings: r.timings ?? null };
}

// Where TF.js's time goes: tf.time's kernel time (GPU timestamps where the backend has them) and
// wall time of one call.
export async function tfjsProfile(n) {
  const list = images.slice(0, n);
  let out;
  const t = await tf.time(() => {
    out = tfjsGraph(list);
  });
  await out.cam.data();
  tf.dispose(out);
  return { kernelMs: t.kernelMs, wallMs: t.wallMs };
}
