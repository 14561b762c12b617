// Offline use: the page's own files (and the wasm package with its bundled model, and the
// example photos) are cached when the page is first loaded. Requests go to the network first,
// so a rebuilt package shows on reload, and fall back to the cache when the server is gone.
// Nothing here sends anything anywhere: only same-origin GETs for the page's files pass.

const CACHE = 'gradcam-wgpu-v1';
const SHELL = [
  './',
  'index.html',
  'app.js',
  'style.css',
  'pkg/gradcam_wgpu.js',
  'pkg/gradcam_wgpu_bg.wasm',
  'pkg/photos/index.json',
];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL);
    try {
      const photos = await (await fetch('pkg/photos/index.json')).json();
      await cache.addAll(photos.map((p) => `pkg/photos/${encodeURIComponent(p)}`));
    } catch { /* the examples are optional */ }
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key !== CACHE) await caches.delete(key);
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET' || new URL(req.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const res = await fetch(req);
      if (res.ok) event.waitUntil(cache.put(req, res.clone()));
      return res;
    } catch (err) {
      const hit = await cache.match(req, { ignoreSearch: true });
      if (hit) return hit;
      throw err;
    }
  })());
});
