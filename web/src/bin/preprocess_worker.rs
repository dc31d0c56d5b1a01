//! The preprocessing worker's entry point: `.ci/site` builds it (feature `preprocess-worker`,
//! without burn) and `public/worker_loader.js?bindings=preprocess_worker` starts it in a Web
//! Worker.

fn main() {
    web::preprocess_worker::start();
}
