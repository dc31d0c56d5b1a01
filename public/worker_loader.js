// Starts a worker (app/src/worker.rs spawns them): wasm-bindgen's classic-script bindings, then
// the module, whose `main` starts the worker. Which worker: its name (`new Worker(url, { name })`:
// `NAME.js` and `NAME_bg.wasm`, beside this file); none is the GPU worker (`worker`),
// `preprocess_worker` the preprocessing worker. Not a query in the URL: a worker's location is
// its script's response URL, which the service worker's cached answer gives without the query.
//
// Offline, the service worker (sw.js) answers these requests from its cache. Where a browser's
// dedicated workers bypass the service worker (Firefox), they fail instead: the files then come
// from Cache Storage directly, where sw.js put them.
const name = self.name || 'worker';
if (!/^[a-z_]+$/.test(name)) throw new Error(`worker_loader.js: no worker named ${JSON.stringify(name)}`);
const cached = async (path) => {
  const response = await caches.match(new URL(path, self.location).href);
  if (!response) throw new Error(`${path}: offline, and not in this site's cache`);
  return response;
};
const bindings = (path) => {
  try {
    importScripts(path);
    return Promise.resolve();
  } catch (error) {
    return cached(path).then(async (response) => importScripts(URL.createObjectURL(await response.blob())));
  }
};
bindings(`./${name}.js`).then(() =>
  wasm_bindgen({ module_or_path: fetch(`./${name}_bg.wasm`).catch(() => cached(`./${name}_bg.wasm`)) }),
);
