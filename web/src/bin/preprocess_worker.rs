//! The preprocessing worker's entry point: `.ci/site` builds it (feature `preprocess-worker`,
//! without burn) and `public/preprocess_worker_loader.js` starts it in a Web Worker.

fn main() {
    web::preprocess_worker::start();
}
