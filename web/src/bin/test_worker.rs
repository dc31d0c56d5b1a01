//! The GPU worker with the requests only the end-to-end tests send (`protocol::TestRequest`),
//! built with the feature `test-requests` by `.ci/site` (TEST_WORKER=1) into `dist-test/`, beside
//! the site and never in it.

fn main() {
    web::worker::main();
}
