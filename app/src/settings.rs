//! The page's settings kept between visits: `localStorage` through gloo-storage, each panel's
//! under `controlnet.{panel}.{name}`, as JSON. Settings are a convenience: where the browser
//! refuses storage (a private window, a full quota) the page works with its defaults, forgets on
//! reload, and the console says so.

use gloo_storage::{LocalStorage, Storage};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One panel's kept settings.
#[derive(Clone, Copy, Debug)]
pub struct Kept(&'static str);

/// The prompt, the generation's settings and the control units.
pub const GENERATE: Kept = Kept("generate");
/// Which models to load, from where, and the last load that completed.
pub const MODELS: Kept = Kept("models");

impl Kept {
    fn key(self, name: &str) -> String {
        format!("controlnet.{}.{name}", self.0)
    }

    /// The setting kept from an earlier visit, if there is one and it still reads.
    pub fn load<T: DeserializeOwned>(self, name: &str) -> Option<T> {
        LocalStorage::get(self.key(name)).ok()
    }

    /// A text setting: its JSON, or the bare text the models panel kept before its settings were
    /// JSON (2026-12-07), so that an earlier visit's choice still reads.
    pub fn load_text(self, name: &str) -> Option<String> {
        self.load(name).or_else(|| LocalStorage::raw().get_item(&self.key(name)).ok().flatten())
    }

    /// Keeps a setting for the next visit.
    pub fn save<T: Serialize>(self, name: &str, value: &T) {
        if let Err(error) = LocalStorage::set(self.key(name), value) {
            web_sys::console::warn_1(&format!("could not keep the setting {name}: {error}").into());
        }
    }
}
