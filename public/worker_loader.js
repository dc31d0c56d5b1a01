// The GPU worker's script (app/src/worker.rs spawns it): wasm-bindgen's classic-script bindings,
// then the module, whose `main` starts the worker.
importScripts('./worker.js');
wasm_bindgen({ module_or_path: './worker_bg.wasm' });
