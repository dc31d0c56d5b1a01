//! The user interface: a Leptos client-side app. Heavy work happens in the GPU worker (the `web`
//! crate); this crate never links burn.

mod gallery;
mod gpu;
mod pwa;
mod session;
mod settings;
mod ui;
mod worker;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(ui::App);
}
