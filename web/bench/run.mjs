// `tools/web.sh bench`: Grad-CAM per image at 224 x 224 (batch 1 and 8) of gradcam-wgpu's engine
// against TF.js Grad-CAM (@tensorflow/tfjs, WebGPU backend, tf.grad) on the same torchvision
// ResNet-18 file in one headless Chromium (WebGPU through SwiftShader), and against the native
// CLI (`gradcam bench`, lavapipe) on the same file. Prints a table and writes the JSON.
//   node web/bench/run.mjs WEIGHTS.safetensors [--rounds N] [--json OUT] [--gradcam BIN]
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { REPO, WEB, serve, launch, watchConsole } from '../tests/support.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : dflt;
};
const rounds = Number(opt('--rounds', '5'));
const jsonOut = resolve(opt('--json', join(REPO, 'docs', 'bench', 'web.json')));
const gradcam = resolve(opt('--gradcam', join(REPO, 'target', 'release', 'gradcam')));
const weights = resolve(args[0] ?? '');
if (!args[0] || !(rounds >= 1)) {
  console.error('usage: node web/bench/run.mjs WEIGHTS.safetensors [--rounds N] [--json OUT] [--gradcam BIN]');
  process.exit(2);
}
const BATCHES = [1, 8];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// The native CLI on lavapipe: end-to-end images/s (upload, preprocess, forward, backward, CAM,
// overlays read back and PNG-encoded in memory) and its GPU-only figure.
function native(batch) {
  const out = execFileSync(gradcam, ['bench', '--model', weights, '--layer', 'layer4', '--batch', String(batch),
    '--iters', batch === 1 ? '5' : '2', '--warmup', '1', '--no-profile', '--json'], { encoding: 'utf8' });
  const j = JSON.parse(out);
  return { msPerImage: 1000 / j.end_to_end.images_per_second, computeMsPerImage: 1000 / j.compute.images_per_second,
    adapter: j.adapter.name };
}

const server = await serve(WEB, { '/__weights/': dirname(weights) });
const browser = await launch();
const result = { rounds, batches: {} };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(30 * 60 * 1000);
  const errors = watchConsole(page);
  await page.goto(`${server.url}bench/page.html`);
  await page.waitForFunction(() => window.benchReady === true);
  const t0 = Date.now();
  const setup = await page.evaluate(([w, img]) => window.bench.setup(w, img),
    [`/__weights/${encodeURIComponent(basename(weights))}`, '/tests/cat.png']);
  console.log(`setup (load both, logits check, first Grad-CAM of each): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  Object.assign(result, setup);
  const c = setup.check;
  console.log(`TF.js backend: ${setup.backend} (tfjs ${setup.tfjsVersion}); adapter: ${JSON.stringify(setup.adapter)}`);
  console.log(`logits check on ${c.images} images: top-1 equal ${c.top1Equal}/${c.images}, top-5 equal ` +
    `${c.top5Equal}/${c.images}, max |diff| ${c.maxAbsDiff.toExponential(2)} ` +
    `(${c.maxRelDiff.toExponential(2)} of the largest |logit|); maps max |diff| ${c.maxMapDiff.toExponential(2)}`);

  for (const batch of BATCHES) {
    // The engine keeps one built runner, per batch size: each batch size's rounds run together,
    // after one untimed warm call of each side.
    await page.evaluate((n) => window.bench.timeOnce('engine', n), batch);
    await page.evaluate((n) => window.bench.timeOnce('tfjs', n), batch);
    const runs = { engine: [], tfjs: [], native: [], stages: [] };
    let nat;
    for (let r = 0; r < rounds; r++) {
      const e = await page.evaluate((n) => window.bench.timeOnce('engine', n), batch);
      const t = await page.evaluate((n) => window.bench.timeOnce('tfjs', n), batch);
      nat = native(batch);
      runs.engine.push(e.ms / batch);
      runs.tfjs.push(t.ms / batch);
      runs.native.push(nat.msPerImage);
      runs.stages.push(e.timings);
      console.log(`batch ${batch} round ${r + 1}: engine ${(e.ms / batch).toFixed(1)} ms/img, ` +
        `TF.js ${(t.ms / batch).toFixed(1)} ms/img, native ${nat.msPerImage.toFixed(1)} ms/img ` +
        `(engine stages: ${['forward_ms', 'backward_ms', 'cam_ms', 'build_ms', 'total_ms']
          .map((k) => `${k} ${e.timings[k]?.toFixed(1)}`).join(', ')})`);
    }
    const prof = await page.evaluate((n) => window.bench.tfjsProfile(n), batch);
    const stage = (k) => median(runs.stages.map((s) => s[k] ?? NaN));
    const row = {
      engine_ms_per_image: median(runs.engine),
      tfjs_ms_per_image: median(runs.tfjs),
      native_ms_per_image: median(runs.native),
      native_adapter: nat.adapter,
      ratio_tfjs_over_engine: median(runs.engine.map((e, i) => runs.tfjs[i] / e)),
      ratio_engine_over_native: median(runs.engine.map((e, i) => e / runs.native[i])),
      engine_stages_ms_per_batch: { forward: stage('forward_ms'), backward: stage('backward_ms'),
        cam: stage('cam_ms'), build: stage('build_ms'), total: stage('total_ms') },
      tfjs_profile_ms_per_batch: prof,
      runs,
    };
    for (const k of ['engine', 'tfjs', 'native']) row[`${k}_images_per_second`] = 1000 / row[`${k}_ms_per_image`];
    result.batches[batch] = row;
  }
  if (errors.length) result.page_errors = errors;
} finally {
  await browser.close().catch(() => {});
  await server.close();
}

result.host = {
  cpu: (readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m) || [])[1] ?? 'unknown',
  cores: cpus().length,
  chromium: execFileSync(process.env.CHROMIUM || '/usr/bin/chromium', ['--version'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(),
};
result.model = 'torchvision resnet18, tools/detweights.py weights (seed 0), 224 x 224, layer4, top-1';
result.date = new Date().toISOString().slice(0, 10);
mkdirSync(dirname(jsonOut), { recursive: true });
writeFileSync(jsonOut, JSON.stringify(result, null, 2) + '\n');

const f = (x) => x.toFixed(1);
console.log('\nGrad-CAM per image, ResNet-18 224 x 224, layer4, top-1; medians of ' + rounds + ' rounds');
console.log('batch | engine ms/img (img/s) | TF.js ms/img (img/s) | native ms/img (img/s) | TF.js/engine | engine/native');
for (const [b, r] of Object.entries(result.batches)) {
  console.log(`${b.padStart(5)} | ${f(r.engine_ms_per_image)} (${r.engine_images_per_second.toFixed(2)}) | ` +
    `${f(r.tfjs_ms_per_image)} (${r.tfjs_images_per_second.toFixed(2)}) | ` +
    `${f(r.native_ms_per_image)} (${r.native_images_per_second.toFixed(2)}) | ` +
    `${r.ratio_tfjs_over_engine.toFixed(2)}x | ${r.ratio_engine_over_native.toFixed(1)}x`);
  const s = r.engine_stages_ms_per_batch;
  console.log(`      engine per batch: forward ${f(s.forward)}, backward ${f(s.backward)}, cam ${f(s.cam)} ms (GPU) ` +
    `of ${f(s.total)} ms total; TF.js tf.time: kernels ${typeof r.tfjs_profile_ms_per_batch.kernelMs === 'number' ?
      f(r.tfjs_profile_ms_per_batch.kernelMs) : r.tfjs_profile_ms_per_batch.kernelMs?.error ?? 'n/a'} ms, ` +
    `wall ${f(r.tfjs_profile_ms_per_batch.wallMs)} ms`);
}
console.log(`host: ${result.host.cpu}, ${result.host.cores} cores, ${result.host.chromium}; wrote ${jsonOut}`);
