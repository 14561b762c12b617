// The page: photo and model in, Grad-CAM overlays out, all on the visitor's GPU through the
// wasm package built by `tools/web.sh build` (web/pkg/). Nothing is sent anywhere: files are
// read with the File API and the only requests are for the page's own files.

const $ = (id) => document.getElementById(id);
const MODEL_EXT = /\.(onnx|safetensors)$/i;

const state = {
  api: null,      // the wasm module's exports
  engine: null,
  model: null,
  modelName: '',
  photo: null,    // {image: ImageData, name}
  busy: false,
};

function setState(s) { document.body.dataset.state = s; }
function setStatus(text) { $('status').textContent = text; }

function showError(text) {
  const el = $('error');
  el.textContent = text;
  el.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

function message(err) {
  return err instanceof Error ? err.message : String(err);
}

// Stage times are null where the GPU has no timestamp queries.
function ms(v) {
  return v == null ? '—' : `${Number(v).toFixed(v >= 100 ? 0 : 1)} ms`;
}

// Buttons follow the state: explain needs an engine, a model and a photo, and nothing running.
function refreshControls() {
  const ready = state.engine && state.model && !state.busy;
  $('explain').disabled = !(ready && state.photo);
  $('model-input').disabled = !ready;
  $('model-default').disabled = !ready;
  for (const id of ['method', 'layer', 'topk']) $(id).disabled = !ready;
}

// Runs one engine call at a time, with the page marked busy meanwhile.
async function exclusive(statusText, fn) {
  if (state.busy) return undefined;
  state.busy = true;
  setState('busy');
  setStatus(statusText);
  refreshControls();
  try {
    return await fn();
  } finally {
    state.busy = false;
    setState('ready');
    refreshControls();
  }
}

// Decodes an image file to RGBA at its own size, with no colour management, as the native
// CLI reads it.
async function decodeImage(blob) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new Error('this browser cannot decode it as an image (is it a JPEG, PNG, WebP or GIF?)');
  }
  const { width, height } = bitmap;
  const canvas = typeof OffscreenCanvas !== 'undefined'
    ? new OffscreenCanvas(width, height)
    : Object.assign(document.createElement('canvas'), { width, height });
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return ctx.getImageData(0, 0, width, height);
}

function canvasOf(image) {
  const canvas = document.createElement('canvas');
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext('2d').putImageData(image, 0, 0);
  return canvas;
}

async function setPhoto(blob, name) {
  clearError();
  try {
    const t0 = performance.now();
    const image = await decodeImage(blob);
    state.photo = { image, name, decodeMs: performance.now() - t0 };
    $('photo-name').textContent = `${name} · ${image.width}×${image.height}`;
    showPhotoOnly();
    setStatus('Photo ready: press Explain.');
  } catch (err) {
    showError(`Could not read the photo ${name}: ${message(err)}.` +
      (state.photo ? ` The previous photo (${state.photo.name}) is still selected.` : ''));
  }
  refreshControls();
}

function photoCard(photo) {
  const fig = document.createElement('figure');
  fig.className = 'card photo';
  fig.append(canvasOf(photo.image));
  const cap = document.createElement('figcaption');
  const label = document.createElement('div');
  label.className = 'label';
  label.textContent = 'Photo';
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.textContent = `${photo.name} · ${photo.image.width}×${photo.image.height}`;
  cap.append(label, meta);
  fig.append(cap);
  return fig;
}

function showPhotoOnly() {
  $('results').replaceChildren(photoCard(state.photo));
  $('timings').hidden = true;
}

function fillSelect(select, items, selected) {
  select.replaceChildren(...items.map(([value, text]) => {
    const o = document.createElement('option');
    o.value = value;
    o.textContent = text;
    o.selected = value === selected;
    return o;
  }));
}

function useModel(model, name) {
  const old = state.model;
  state.model = model;
  state.modelName = name;
  if (old && old !== model) old.free?.();
  const { width, height } = model.inputSize;
  $('model-name').textContent =
    `${name} · ${model.labels.length} classes · ${width}×${height}`;
  fillSelect($('layer'), [['', `default (${model.defaultLayer})`],
    ...model.layers.map((l) => [l, l])], '');
  const topk = $('topk');
  topk.max = String(Math.max(1, Math.min(10, model.labels.length)));
  if (Number(topk.value) > Number(topk.max)) topk.value = topk.max;
}

async function loadModel(file) {
  clearError();
  await exclusive(file ? `Loading ${file.name}…` : 'Loading the bundled model…', async () => {
    try {
      const t0 = performance.now();
      const model = file
        ? await state.engine.loadModel(new Uint8Array(await file.arrayBuffer()))
        : await state.engine.loadModel();
      useModel(model, file ? file.name : (model.name || 'bundled model'));
      setStatus(`Model loaded in ${ms(performance.now() - t0)}.`);
    } catch (err) {
      const what = file ? `the model ${file.name}` : 'the bundled model';
      showError(`Could not load ${what}: ${message(err)}` +
        (state.model ? `\nThe previous model (${state.modelName}) is still loaded.` : ''));
      setStatus(state.model ? `Using ${state.modelName}.` : 'No model loaded.');
    }
  });
}

function overlayCard(r, i) {
  const fig = document.createElement('figure');
  fig.className = 'card overlay';
  fig.append(canvasOf(r.overlay(i)));
  const cap = document.createElement('figcaption');
  const label = document.createElement('div');
  label.className = 'label';
  label.textContent = r.labels[i] || `class ${r.classes[i]}`;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const cls = document.createElement('span');
  cls.textContent = `#${i + 1} · class ${r.classes[i]}`;
  const prob = document.createElement('span');
  prob.className = 'prob';
  const p = r.probs[i];
  prob.textContent = `p = ${(p * 100).toFixed(p < 0.001 ? 3 : 1)}%`;
  meta.append(cls, prob);
  const bar = document.createElement('div');
  bar.className = 'bar';
  const fill = document.createElement('span');
  fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
  bar.append(fill);
  cap.append(label, meta, bar);
  fig.append(cap);
  return fig;
}

function showTimings(rows) {
  const body = $('timings').tBodies[0];
  body.replaceChildren(...rows.map(([name, v, total]) => {
    const tr = document.createElement('tr');
    if (total) tr.className = 'total';
    const th = document.createElement('th');
    th.textContent = name;
    const td = document.createElement('td');
    td.textContent = ms(v);
    tr.append(th, td);
    return tr;
  }));
  $('timings').hidden = false;
}

async function explain() {
  if (!state.photo || !state.model) return;
  clearError();
  const photo = state.photo; // a photo chosen meanwhile waits for the next press
  const method = $('method').value;
  const layer = $('layer').value;
  const k = Math.max(1, Math.min(Number($('topk').max) || 10, Math.round(Number($('topk').value) || 1)));
  $('topk').value = String(k);
  const options = { method, target: `top${k}` };
  if (layer) options.layer = layer;
  await exclusive(`Explaining ${photo.name} with ${method}…`, async () => {
    try {
      const t0 = performance.now();
      const r = await state.engine.explain(state.model, photo.image, options);
      const wall = performance.now() - t0;
      const cards = [photoCard(photo)];
      for (let i = 0; i < r.classes.length; i++) cards.push(overlayCard(r, i));
      $('results').replaceChildren(...cards);
      const t = r.timings || {};
      showTimings([
        ['Decode photo', photo.decodeMs],
        // Compiling the GPU pipelines: the first explain with a model and method only.
        ...(t.build_ms > 0 ? [['Build pipelines', t.build_ms]] : []),
        ['Forward', t.forward_ms],
        ['Backward', t.backward_ms],
        ['CAM', t.cam_ms],
        ['Engine total', t.total_ms, true],
        ['Page total (with copies)', wall],
      ]);
      setStatus(`Explained ${r.classes.length} class${r.classes.length === 1 ? '' : 'es'} ` +
        `in ${ms(wall)}.`);
      r.free?.();
    } catch (err) {
      showError(`Could not explain ${photo.name}: ${message(err)}`);
      setStatus('Explain failed; change the settings and try again.');
    }
  });
}

async function loadExamples() {
  let names = [];
  try {
    const res = await fetch('pkg/photos/index.json');
    if (res.ok) names = await res.json();
  } catch { /* no examples: the file picker still works */ }
  $('examples').replaceChildren(...names.map((name) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'example';
    b.dataset.photo = name;
    b.title = `Example photo: ${name}`;
    const img = document.createElement('img');
    img.src = `pkg/photos/${encodeURIComponent(name)}`;
    img.alt = name.replace(/\.[^.]+$/, '');
    b.append(img);
    b.addEventListener('click', async () => {
      for (const e of document.querySelectorAll('.example')) e.classList.toggle('selected', e === b);
      try {
        const res = await fetch(img.src);
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        await setPhoto(await res.blob(), name);
      } catch (err) {
        showError(`Could not fetch the example photo ${name}: ${message(err)}`);
      }
    });
    return b;
  }));
}

function takeFile(file) {
  if (!file) return;
  if (MODEL_EXT.test(file.name)) {
    loadModel(file);
  } else {
    for (const e of document.querySelectorAll('.example')) e.classList.remove('selected');
    setPhoto(file, file.name);
  }
}

function wire() {
  $('controls').addEventListener('submit', (e) => {
    e.preventDefault();
    explain();
  });
  $('photo-input').addEventListener('change', (e) => {
    takeFile(e.target.files[0]);
    e.target.value = '';
  });
  $('model-input').addEventListener('change', (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (file) loadModel(file);
  });
  $('model-default').addEventListener('click', () => loadModel(null));
  const drop = $('drop');
  window.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  window.addEventListener('dragleave', (e) => {
    if (!e.relatedTarget) drop.classList.remove('over');
  });
  window.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    takeFile(e.dataTransfer?.files?.[0]);
  });
}

function noWebGpu(reason) {
  $('nogpu-reason').textContent = reason ? ` (${reason})` : '';
  $('nogpu').hidden = false;
  $('controls').hidden = true;
  setStatus('WebGPU is not available.');
  setState('nogpu');
}

async function start() {
  wire();
  refreshControls();
  if ('serviceWorker' in navigator && window.isSecureContext) {
    navigator.serviceWorker.register('sw.js').catch(() => { /* offline use only */ });
  }
  loadExamples();
  if (!navigator.gpu) {
    noWebGpu(window.isSecureContext ? 'navigator.gpu is missing'
      : 'this address is not a secure context');
    return;
  }
  try {
    setStatus('Loading the engine…');
    state.api = await import('./pkg/gradcam_wgpu.js');
    await state.api.default();
  } catch (err) {
    showError(`Could not load the engine (web/pkg/): ${message(err)}. ` +
      'Build it with tools/web.sh build.');
    setStatus('The engine did not load.');
    setState('failed');
    return;
  }
  try {
    state.engine = await state.api.Engine.create();
  } catch (err) {
    noWebGpu(message(err));
    return;
  }
  $('adapter').textContent = `GPU: ${state.engine.adapter}`;
  const names = state.api.methods();
  fillSelect($('method'), names.map((m) => [m, m]), names.includes('gradcam') ? 'gradcam' : names[0]);
  await loadModel(null);
  if (!state.model) setState('failed');
}

start();
