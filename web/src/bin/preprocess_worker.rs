//! The preprocessing worker's entry point; Trunk builds it as a Web Worker (`data-type="worker"`,
//! feature `preprocess-worker`, without burn).

fn main() {
    web::preprocess_worker::start();
}
