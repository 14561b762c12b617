// The page and its wasm package in headless Debian chromium, WebGPU through SwiftShader
// (tools/web.sh test: it builds web/pkg/ and the native CLI first).
//  1. The JS API: the bundled model explains tests/cat.png (examples/photos/cat.jpg as a PNG,
//     so both sides read the same pixels) and its maps, classes and overlays equal those the
//     native CLI writes for the same PNG.
//  2. The page as a person uses it: choose a photo, press Explain, see overlays and labels; a
//     corrupt model file and a corrupt image each show an error and the page keeps working.
// SwiftShader runs the shaders on the CPU: the timeouts are minutes and explains are few.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, WEB, launch, serve, watchConsole } from './support.mjs';

const MINUTE = 60_000;
const PNG = join(WEB, 'tests', 'cat.png');

// A .npy file of little-endian f32 (what `gradcam explain --save-cam` writes).
function readNpy(file) {
  const buf = readFileSync(file);
  assert.equal(buf.toString('latin1', 0, 6), '\x93NUMPY', `${file}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.toString('latin1', major === 1 ? 10 : 12, start);
  assert.match(header, /'descr':\s*'<f4'/, `${file}: not little-endian f32`);
  assert.match(header, /'fortran_order':\s*False/);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').filter((s) => s.trim())
    .map(Number);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + buf.length));
  assert.equal(data.length, shape.reduce((a, b) => a * b, 1));
  return { shape, data };
}

let server;
let browser;
let outDir;
let native; // {classes, labels, probs, maps: [Float32Array], pngs: [file names], shape}

before(async () => {
  outDir = mkdtempSync(join(tmpdir(), 'gradcam-web-'));
  execFileSync(join(REPO, 'target', 'release', 'gradcam'), ['explain', PNG, '--target', 'top3',
    '--save-cam', '--resize', 'host', '--out', outDir], { stdio: ['ignore', 'ignore', 'inherit'] });
  const line = JSON.parse(readFileSync(join(outDir, 'predictions.jsonl'), 'utf8').split('\n')[0]);
  assert.equal(line.status, 'ok');
  const npys = line.outputs.filter((f) => f.endsWith('.npy'));
  const pngs = line.outputs.filter((f) => f.endsWith('.png'));
  assert.equal(npys.length, 3);
  assert.equal(pngs.length, 3);
  const maps = npys.map((f) => readNpy(join(outDir, f)));
  native = {
    classes: line.top5.slice(0, 3).map((t) => t.class),
    labels: line.top5.slice(0, 3).map((t) => t.label),
    probs: line.top5.slice(0, 3).map((t) => t.prob),
    maps: maps.map((m) => m.data),
    shape: maps[0].shape,
    pngs,
  };
  server = await serve(WEB, { '/__native/': outDir });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (outDir) rmSync(outDir, { recursive: true, force: true });
});

test('the JS API equals the native CLI on the same PNG', { timeout: 20 * MINUTE }, async (t) => {
  const page = await browser.newPage();
  page.setDefaultTimeout(15 * MINUTE);
  const errors = watchConsole(page, (s) => t.diagnostic(s));
  await page.goto(`${server.url}__blank`);
  const got = await page.evaluate(async (pngs) => {
    const decode = async (url) => {
      const blob = await (await fetch(url)).blob();
      const bm = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
      const ctx = new OffscreenCanvas(bm.width, bm.height).getContext('2d');
      ctx.drawImage(bm, 0, 0);
      return ctx.getImageData(0, 0, bm.width, bm.height);
    };
    const ms = {};
    let t0 = performance.now();
    const { default: init, Engine, methods, shaderSources } = await import('/pkg/gradcam_wgpu.js');
    await init();
    ms.init = performance.now() - t0;
    t0 = performance.now();
    const engine = await Engine.create();
    ms.create = performance.now() - t0;
    t0 = performance.now();
    const model = await engine.loadModel();
    ms.load = performance.now() - t0;
    const image = await decode('/tests/cat.png');
    t0 = performance.now();
    const r = await engine.explain(model, image, { method: 'gradcam', target: 'top3' });
    ms.explain = performance.now() - t0;
    // An array is one batch: each image's maps equal the single image's.
    const rb = await engine.explain(model, [image, image], { method: 'gradcam', target: 'top3' });
    let batchDiff = 0;
    for (const one of rb) {
      const m = one.maps;
      for (let p = 0; p < m.length; p++) batchDiff = Math.max(batchDiff, Math.abs(m[p] - r.maps[p]));
    }
    const batch = { isArray: Array.isArray(rb), length: rb.length, maxDiff: batchDiff,
      classes: rb.map((one) => Array.from(one.classes)) };
    // Every module the engine can create compiles under the browser's own WGSL compiler.
    const adapter = await navigator.gpu.requestAdapter();
    const feats = [...adapter.features].filter((f) => ['shader-f16', 'subgroups'].includes(f));
    const device = await adapter.requestDevice({ requiredFeatures: feats });
    const wgsl = { modules: 0, messages: [] };
    for (const [name, code] of shaderSources()) {
      if (name.includes('(f16)') && !feats.includes('shader-f16')) continue;
      wgsl.modules++;
      const info = await device.createShaderModule({ code, label: name }).getCompilationInfo();
      for (const m of info.messages) wgsl.messages.push(`${m.type} ${name}:${m.lineNum}: ${m.message}`);
    }
    device.destroy();
    // The overlay colours JET[trunc(255 * map)]: where 255 * map is within float noise of an
    // integer k >= 1, the two engines may pick neighbouring JET entries (a few levels apart). Those
    // pixels are counted apart; every other one must be within one level.
    const overlays = [];
    const maps = r.maps;
    for (let i = 0; i < r.classes.length; i++) {
      const mine = r.overlay(i);
      const theirs = await decode(`/__native/${encodeURIComponent(pngs[i])}`);
      let maxDiff = 0;
      let onEdge = 0;
      const bad = [];
      if (mine.width === theirs.width && mine.height === theirs.height) {
        const plane = mine.width * mine.height;
        for (let p = 0; p < plane; p++) {
          let d = 0;
          for (let c = 0; c < 3; c++) d = Math.max(d, Math.abs(mine.data[4 * p + c] - theirs.data[4 * p + c]));
          if (d <= 1) continue;
          const x = 255 * maps[i * plane + p];
          if (x > 0.5 && Math.abs(x - Math.round(x)) < 2e-3) {
            onEdge++;
            continue;
          }
          maxDiff = Math.max(maxDiff, d);
          if (bad.length < 4) {
            bad.push(`(${p % mine.width},${Math.floor(p / mine.width)}) ` +
              `${Array.from(mine.data.slice(4 * p, 4 * p + 4))} vs ${Array.from(theirs.data.slice(4 * p, 4 * p + 4))}`);
          }
        }
      }
      overlays.push({ width: mine.width, height: mine.height, nativeWidth: theirs.width,
        nativeHeight: theirs.height, isImageData: mine instanceof ImageData, maxDiff, onEdge, bad });
    }
    return {
      adapter: engine.adapter,
      methods: methods(),
      name: model.name,
      layers: model.layers,
      defaultLayer: model.defaultLayer,
      nLabels: model.labels.length,
      inputSize: { width: model.inputSize.width, height: model.inputSize.height },
      width: r.width,
      height: r.height,
      classes: Array.from(r.classes),
      classesIsInt32: r.classes instanceof Int32Array,
      labels: Array.from(r.labels),
      probs: Array.from(r.probs),
      logits: Array.from(r.logits),
      maps: Array.from(r.maps),
      timings: { ...r.timings },
      overlays,
      batch,
      wgsl,
      ms,
    };
  }, native.pngs);

  t.diagnostic(`adapter: ${got.adapter}`);
  t.diagnostic(`page: init ${got.ms.init.toFixed(0)} ms, Engine.create ${got.ms.create.toFixed(0)} ms, ` +
    `loadModel ${got.ms.load.toFixed(0)} ms, explain ${got.ms.explain.toFixed(0)} ms; engine timings ` +
    JSON.stringify(got.timings));
  assert.ok(got.methods.includes('gradcam') && got.methods.includes('gradcam++'), 'methods()');
  assert.equal(got.nLabels, 1000);
  assert.deepEqual(got.inputSize, { width: 224, height: 224 });
  assert.ok(got.layers.includes(got.defaultLayer), `defaultLayer ${got.defaultLayer} in layers`);

  assert.equal(got.width, 224);
  assert.equal(got.height, 224);
  assert.deepEqual(native.shape, [224, 224]);
  assert.ok(got.classesIsInt32, 'r.classes is an Int32Array');
  assert.deepEqual(got.classes, native.classes);
  assert.deepEqual(got.labels, native.labels);
  for (let i = 0; i < 3; i++) {
    assert.ok(Math.abs(got.probs[i] - native.probs[i]) < 1e-3, `prob ${i}: ${got.probs[i]} vs ${native.probs[i]}`);
  }
  const hw = 224 * 224;
  assert.equal(got.maps.length, 3 * hw);
  let maxMap = 0;
  for (let i = 0; i < 3; i++) {
    for (let p = 0; p < hw; p++) {
      const v = got.maps[i * hw + p];
      assert.ok(v >= 0 && v <= 1, `map ${i} value ${v} outside [0, 1]`);
      maxMap = Math.max(maxMap, Math.abs(v - native.maps[i][p]));
    }
  }
  const maxOverlay = Math.max(...got.overlays.map((o) => o.maxDiff));
  const onEdge = got.overlays.map((o) => o.onEdge).reduce((a, b) => a + b, 0);
  t.diagnostic(`against the native CLI: max |map diff| ${maxMap.toExponential(2)}, ` +
    `max overlay diff ${Math.max(1, maxOverlay)} levels (besides ${onEdge} pixel(s) on a JET ` +
    `step); classes ${got.classes.join(',')} (${got.labels.join(', ')})`);
  assert.ok(maxMap <= 1e-3, `maps differ by ${maxMap}`);
  for (const o of got.overlays) {
    assert.ok(o.isImageData, 'r.overlay(i) is an ImageData');
    assert.deepEqual([o.width, o.height], [o.nativeWidth, o.nativeHeight]);
    assert.ok(o.maxDiff <= 1, `overlay differs by ${o.maxDiff} levels at ${o.bad.join('; ')}`);
    assert.ok(o.onEdge <= 0.001 * o.width * o.height, `${o.onEdge} pixels on a JET step`);
  }
  assert.ok(got.batch.isArray, 'an array of images resolves to an array');
  assert.equal(got.batch.length, 2);
  for (const c of got.batch.classes) assert.deepEqual(c, got.classes);
  assert.ok(got.batch.maxDiff <= 1e-5, `batched maps differ from the single image's by ${got.batch.maxDiff}`);
  t.diagnostic(`WGSL: ${got.wgsl.modules} modules compiled by the browser, ${got.wgsl.messages.length} message(s)`);
  assert.deepEqual(got.wgsl.messages, []);
  if (errors.length) t.diagnostic(`browser errors: ${errors.length}`);
  await page.close();
});

test('errors reject the promise with the engine\'s message', { timeout: 10 * MINUTE }, async (t) => {
  const page = await browser.newPage();
  page.setDefaultTimeout(5 * MINUTE);
  await page.goto(`${server.url}__blank`);
  const got = await page.evaluate(async () => {
    const { default: init, Engine } = await import('/pkg/gradcam_wgpu.js');
    await init();
    const engine = await Engine.create();
    const model = await engine.loadModel();
    const image = { data: new Uint8ClampedArray(8 * 6 * 4).fill(128), width: 8, height: 6 };
    // How a call fails: 'rejects' (the contract), 'throws' (synchronously) or 'resolves'.
    const outcome = async (call) => {
      let promise;
      try {
        promise = call();
      } catch (err) {
        return { how: 'throws', isError: err instanceof Error, message: String(err?.message ?? err) };
      }
      try {
        await promise;
        return { how: 'resolves' };
      } catch (err) {
        return { how: 'rejects', isError: err instanceof Error, message: String(err?.message ?? err) };
      }
    };
    return {
      unknown: await outcome(() => engine.explain(model, image, { method: 'gradcam', no_such_option: 1 })),
      method: await outcome(() => engine.explain(model, image, { method: 'no-such-method' })),
      model: await outcome(() => engine.loadModel(new Uint8Array([1, 2, 3, 4, 5]))),
    };
  });
  await page.close();
  for (const [what, o] of Object.entries(got)) t.diagnostic(`${what}: ${JSON.stringify(o)}`);
  for (const [what, o] of Object.entries(got)) {
    assert.equal(o.how, 'rejects', `${what}: ${JSON.stringify(o)}`);
    assert.ok(o.isError, `${what}: an Error`);
    assert.ok(o.message.length > 0, `${what}: a message`);
  }
  assert.match(got.unknown.message, /no_such_option/);
  assert.match(got.method.message, /no-such-method/);
});

test('the page explains a chosen photo and survives corrupt files', { timeout: 25 * MINUTE }, async (t) => {
  const page = await browser.newPage();
  page.setDefaultTimeout(15 * MINUTE);
  const errors = watchConsole(page, (s) => t.diagnostic(s));
  let t0 = Date.now();
  await page.goto(server.url);
  await page.waitForSelector('body[data-state="ready"]');
  t.diagnostic(`page ready (engine and bundled model) in ${Date.now() - t0} ms`);
  assert.match(await page.textContent('#privacy'), /Nothing leaves this machine/);
  const modelName = await page.textContent('#model-name');
  assert.match(modelName, /1000 classes/);
  assert.ok(await page.locator('#layer option').count() > 2, 'the layer picker is filled');
  assert.ok(await page.locator('#method option[value="gradcam"]').count() === 1);
  assert.ok(await page.locator('.example').count() >= 1, 'example photos are offered');

  // A person picks a photo, asks for two classes and presses Explain.
  await page.setInputFiles('#photo-input', join(REPO, 'examples', 'photos', 'coffee.jpg'));
  await page.waitForSelector('#explain:not([disabled])');
  await page.fill('#topk', '2');
  t0 = Date.now();
  await page.click('#explain');
  await page.waitForFunction(() => document.body.dataset.state === 'ready' &&
    /^Explained/.test(document.getElementById('status').textContent));
  t.diagnostic(`first explain on the page: ${Date.now() - t0} ms`);
  assert.equal(await page.isHidden('#error'), true, await page.textContent('#error'));
  assert.equal(await page.locator('#results .card.overlay').count(), 2);
  const labels = await page.locator('#results .card.overlay .label').allTextContents();
  t.diagnostic(`labels: ${labels.join(', ')}`);
  assert.equal(labels[0], 'espresso');
  assert.ok(labels.every((l) => l.length > 0));
  assert.match(await page.textContent('#results .card.overlay .prob'), /p = \d/);
  assert.equal(await page.isVisible('#timings'), true);
  assert.match(await page.textContent('#timings'), /Forward/);
  const size = await page.evaluate(() =>
    [...document.querySelectorAll('#results .card.overlay canvas')].map((c) => [c.width, c.height]));
  assert.deepEqual(size, [[224, 224], [224, 224]]);

  // A corrupt model: a clear message, and the bundled model stays loaded.
  await page.setInputFiles('#model-input', { name: 'bad.onnx', mimeType: 'application/octet-stream',
    buffer: Buffer.from([0x08, 0x07, 0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x00, 0xff, 0x3a, 0x91]) });
  await page.waitForSelector('#error:not([hidden])');
  const modelError = await page.textContent('#error');
  t.diagnostic(`corrupt model: ${modelError}`);
  assert.match(modelError, /bad\.onnx/);
  assert.match(modelError, /previous model .* still loaded/);
  assert.equal(await page.textContent('#model-name'), modelName);
  await page.waitForSelector('body[data-state="ready"]');

  // A corrupt image: a clear message, and the photo chosen before stays.
  await page.setInputFiles('#photo-input', { name: 'broken.jpg', mimeType: 'image/jpeg',
    buffer: Buffer.from('this is not a JPEG') });
  await page.waitForFunction(() => /broken\.jpg/.test(document.getElementById('error').textContent));
  t.diagnostic(`corrupt image: ${await page.textContent('#error')}`);
  assert.match(await page.textContent('#photo-name'), /coffee\.jpg/);

  // The page still works: another method on the same photo.
  await page.selectOption('#method', 'hirescam');
  t0 = Date.now();
  await page.click('#explain');
  await page.waitForFunction(() => document.body.dataset.state === 'ready' &&
    /^Explained/.test(document.getElementById('status').textContent));
  t.diagnostic(`explain after the errors: ${Date.now() - t0} ms`);
  assert.equal(await page.isHidden('#error'), true, await page.textContent('#error'));
  assert.equal(await page.locator('#results .card.overlay').count(), 2);
  if (errors.length) t.diagnostic(`browser errors: ${errors.length}`);
  await page.close();
});

test('without WebGPU the page says what it needs', { timeout: 5 * MINUTE }, async () => {
  const page = await browser.newPage();
  await page.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined });
  });
  await page.goto(server.url);
  await page.waitForSelector('body[data-state="nogpu"]');
  assert.equal(await page.isVisible('#nogpu'), true);
  const text = await page.textContent('#nogpu');
  for (const need of [/WebGPU/, /Chrome or Edge 113\+/, /Safari 26/, /Firefox 141\+/]) {
    assert.match(text, need);
  }
  assert.match(await page.textContent('#privacy'), /Nothing leaves this machine/);
  await page.close();
});

test('once loaded, the page works offline', { timeout: 15 * MINUTE }, async (t) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(10 * MINUTE);
  watchConsole(page, (s) => t.diagnostic(s));
  await page.goto(server.url);
  await page.waitForSelector('body[data-state="ready"]');
  await page.evaluate(() => navigator.serviceWorker.ready);
  await context.setOffline(true);
  try {
    await page.reload();
    await page.waitForSelector('body[data-state="ready"]');
    assert.match(await page.textContent('#model-name'), /1000 classes/);
    assert.ok(await page.locator('.example').count() >= 1);
    assert.equal(await page.isHidden('#error'), true);
  } finally {
    await context.close();
  }
});
