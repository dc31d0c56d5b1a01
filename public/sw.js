// The service worker: the app offline. Plain JavaScript, not Rust: it runs on every navigation
// and request, must start in milliseconds and do four small things, and a second wasm module
// (with its bindings) would cost more than the whole file.
//
// - install: precache the build's every file (the app shell: HTML, the three wasm binaries and
//   their JS, CSS, the manifest, icons; and the site's own shapes models) in a cache named by the
//   build. The list and the build's name are written into PRECACHE below by .ci/precache.mjs,
//   from the files the build made; this file never names an asset by hand.
// - It then waits: a new build takes over only when the page asks (the visitor pressed Reload on
//   "A new version is ready"), so nothing changes under a generation in progress.
// - activate: delete older builds' caches; take control of open pages.
// - fetch: the precached files from the cache (navigations get the cached index.html); everything
//   else from the network, untouched: weights from a hub are never cached here (the GPU worker
//   keeps them in IndexedDB).
'use strict';

/* PRECACHE: written by .ci/precache.mjs */
const PRECACHE = { build: 'unbuilt', files: [] };

const PREFIX = 'controlnet-web-';
const CACHE = PREFIX + PRECACHE.build;
const SCOPE = new URL(self.registration.scope);
const urlOf = (file) => new URL(file, SCOPE).href;
const PRECACHED = new Set(PRECACHE.files.map(urlOf));

self.addEventListener('install', (event) => {
  // `reload`: the files from the server, not from the browser's HTTP cache of an older build.
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(PRECACHE.files.map((file) => new Request(urlOf(file), { cache: 'reload' })))),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('message', (event) => {
  if (event.data?.type === 'skip-waiting') self.skipWaiting();
  if (event.data?.type === 'build') event.source?.postMessage({ type: 'build', build: PRECACHE.build, files: PRECACHE.files.length });
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET' && request.method !== 'HEAD') return;
  const url = new URL(request.url);
  url.search = '';
  url.hash = '';
  let key = url.href;
  if (request.mode === 'navigate' && url.href.startsWith(SCOPE.href)) key = urlOf('index.html');
  if (!PRECACHED.has(key)) return;
  event.respondWith(
    (async () => {
      const cached = await caches.match(key, { cacheName: CACHE });
      if (!cached) return fetch(request);
      if (request.method === 'HEAD') return new Response(null, { status: cached.status, headers: cached.headers });
      const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.get('range') ?? '');
      if (!range) return cached;
      // A part of the file, as a server answers a Range request (the GPU worker resumes so).
      const body = await cached.blob();
      const start = Number(range[1]);
      const end = range[2] === '' ? body.size : Math.min(Number(range[2]) + 1, body.size);
      if (start >= end) return new Response(null, { status: 416, headers: { 'content-range': `bytes */${body.size}` } });
      const headers = new Headers(cached.headers);
      headers.set('content-range', `bytes ${start}-${end - 1}/${body.size}`);
      headers.set('content-length', String(end - start));
      return new Response(body.slice(start, end), { status: 206, headers });
    })(),
  );
});
