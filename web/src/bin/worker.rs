//! The GPU worker's entry point: `.ci/site` builds it for wasm-bindgen's `no-modules` target and
//! `public/worker_loader.js` starts it in a Web Worker.

// cubecl's compiler (pliron) registers its types with `inventory`, that is with Wasm
// constructors. A module that never runs them itself counts as a "command" to the Wasm linker,
// which then calls every constructor again at the start of *each* exported function: every
// allocation from JavaScript, every object handed to Rust (each WebGPU object, each message)
// paid ~0.5 ms in Chromium. Running them once, here, makes the module a "reactor" and those
// calls cost what they should.
#[cfg(target_family = "wasm")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

fn main() {
    // SAFETY: the linker's own constructor list, run once, before anything reads what it
    // registers.
    #[cfg(target_family = "wasm")]
    unsafe {
        __wasm_call_ctors();
    }
    web::worker::start();
}
