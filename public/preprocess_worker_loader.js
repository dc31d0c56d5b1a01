// The preprocessing worker's script (app/src/worker.rs spawns it): wasm-bindgen's classic-script
// bindings, then the module, whose `main` starts the worker.
importScripts('./preprocess_worker.js');
wasm_bindgen({ module_or_path: './preprocess_worker_bg.wasm' });
