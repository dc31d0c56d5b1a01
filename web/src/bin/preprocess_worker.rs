//! The preprocessing worker's entry point: `.ci/site` builds it (feature `preprocess-worker`,
//! without burn) and `public/worker_loader.js` starts it in a Web Worker named
//! `preprocess_worker`.

fn main() {
    web::preprocess_worker::start();
}
