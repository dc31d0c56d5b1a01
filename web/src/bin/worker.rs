//! The GPU worker's entry point; Trunk builds it as a Web Worker (`data-type="worker"`).

fn main() {
    web::worker::start();
}
