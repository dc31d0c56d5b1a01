//! The GPU worker's entry point: `.ci/site` builds it for wasm-bindgen's `no-modules` target and
//! `public/worker_loader.js` starts it in a Web Worker.

fn main() {
    web::worker::main();
}
