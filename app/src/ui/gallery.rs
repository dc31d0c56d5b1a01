//! The gallery: every image made here, newest first, kept in IndexedDB ([`crate::gallery`])
//! across reloads, each with a download link, "use these parameters again", and delete.
//!
//! An image is shown as soon as it is made and stored afterwards: a full disk (or no IndexedDB)
//! costs the image its place after a reload, never its place on the page.

use js_sys::{Array, Uint8Array};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsValue;
use web_sys::{Blob, BlobPropertyBag, Url};

use web::protocol::vocabulary::a1111::Parameters;

use super::generate::GenSettings;
use super::units::UnitList;
use crate::gallery::{GalleryDb, Record};
use crate::gpu::describe_js_error;
use web::idb::IdbError;

/// A blob URL for PNG bytes (the page's to revoke).
pub fn blob_url(png: &Uint8Array) -> Result<String, String> {
    let options = BlobPropertyBag::new();
    options.set_type("image/png");
    Blob::new_with_u8_array_sequence_and_options(&Array::of1(png), &options)
        .and_then(|blob| Url::create_object_url_with_blob(&blob))
        .map_err(|e| describe_js_error(&e))
}

pub fn revoke(url: &str) {
    // Revoking an unknown URL does nothing; it cannot fail in a way worth telling.
    let _ = Url::revoke_object_url(url);
}

/// One image of the gallery, as the page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The record's key: its creation time in milliseconds.
    pub id: f64,
    pub created: f64,
    pub thumb_url: String,
    pub png_url: String,
    pub parameters: String,
    /// How it was made, read back from its parameters text; `None` when that does not read
    /// (the image still shows).
    pub params: Option<Parameters>,
    /// Whether it is in IndexedDB; if not, it is shown until the page closes.
    pub saved: bool,
}

impl Item {
    fn key(&self) -> (u64, bool) {
        (self.id as u64, self.saved)
    }

    fn revoke(&self) {
        revoke(&self.thumb_url);
        revoke(&self.png_url);
    }

    fn from_record(record: &Record) -> Result<Self, String> {
        let item = Item {
            id: record.id,
            created: record.created,
            thumb_url: blob_url(&record.thumbnail)?,
            png_url: blob_url(&record.png)?,
            parameters: record.parameters.clone(),
            params: Parameters::parse(&record.parameters).ok(),
            saved: true,
        };
        Ok(item)
    }

    fn file_name(&self) -> String {
        let seed = self.params.as_ref().map_or_else(|| "image".to_owned(), |p| p.params.seed.to_string());
        format!("controlnet-{seed}-{}.png", self.id as u64)
    }
}

/// The gallery's items and its last error. Cheap to copy.
#[derive(Clone, Copy)]
pub struct GalleryState {
    /// Newest first.
    items: RwSignal<Vec<Item>>,
    error: RwSignal<Option<String>>,
    loading: RwSignal<bool>,
    /// The last id given out: two images in the same millisecond get different ids.
    last_id: StoredValue<f64>,
}

impl GalleryState {
    pub fn new() -> Self {
        let items = RwSignal::new(Vec::<Item>::new());
        on_cleanup(move || {
            items.try_with_untracked(|items| items.iter().for_each(Item::revoke));
        });
        Self {
            items,
            error: RwSignal::new(None),
            loading: RwSignal::new(false),
            last_id: StoredValue::new(0.0),
        }
    }

    /// Shows a new image at once and stores it.
    pub fn add(&self, png: Uint8Array, thumbnail: Uint8Array, parameters: String) {
        let created = js_sys::Date::now();
        let id = created.floor().max(self.last_id.get_value() + 1.0);
        self.last_id.set_value(id);
        let record = Record { id, created, png, thumbnail, parameters };
        let item = match Item::from_record(&record) {
            Ok(item) => Item { saved: false, ..item },
            Err(message) => {
                self.error.set(Some(format!("Could not show the image in the gallery: {message}")));
                return;
            }
        };
        self.items.update(|items| items.insert(0, item));
        let (items, error) = (self.items, self.error);
        spawn_local(async move {
            let stored = async { GalleryDb::open().await?.add(&record).await }.await;
            match stored {
                Ok(()) => items.update(|items| {
                    if let Some(item) = items.iter_mut().find(|item| item.id == id) {
                        item.saved = true;
                    }
                }),
                Err(e) => error.set(Some(save_failure(&e))),
            }
        });
    }

    /// Reads the stored images, keeping any made meanwhile.
    fn load(&self) {
        let (items, error, loading, last_id) = (self.items, self.error, self.loading, self.last_id);
        loading.set(true);
        spawn_local(async move {
            let listed = async { GalleryDb::open().await?.list().await }.await;
            loading.set(false);
            let records = match listed {
                Ok(records) => records,
                Err(e) => {
                    error.set(Some(format!("Could not read the gallery: {e}")));
                    return;
                }
            };
            let mut loaded = Vec::new();
            let mut unreadable = 0;
            for record in records {
                match record.map_err(|e| e.to_string()).and_then(|record| Item::from_record(&record)) {
                    Ok(item) => loaded.push(item),
                    Err(_) => unreadable += 1,
                }
            }
            if unreadable > 0 {
                error.set(Some(format!("{unreadable} stored image(s) could not be read and are not shown.")));
            }
            if let Some(newest) = loaded.iter().map(|item| item.id).reduce(f64::max) {
                last_id.update_value(|last| *last = last.max(newest));
            }
            items.update(|items| {
                for item in loaded {
                    if items.iter().any(|shown| shown.id == item.id) {
                        item.revoke();
                    } else {
                        items.push(item);
                    }
                }
                items.sort_by(|a, b| b.id.total_cmp(&a.id));
            });
        });
    }

    fn delete(&self, id: f64) {
        let (items, error) = (self.items, self.error);
        let saved =
            items.with_untracked(|items| items.iter().find(|item| item.id == id).map(|item| item.saved));
        let forget = move || {
            items.update(|items| {
                if let Some(index) = items.iter().position(|item| item.id == id) {
                    items.remove(index).revoke();
                }
            })
        };
        match saved {
            None => {}
            Some(false) => forget(),
            Some(true) => spawn_local(async move {
                match async { GalleryDb::open().await?.delete(id).await }.await {
                    Ok(()) => forget(),
                    Err(e) => error.set(Some(format!("Could not delete the image: {e}"))),
                }
            }),
        }
    }
}

fn save_failure(error: &IdbError) -> String {
    let advice = match error {
        IdbError::QuotaExceeded(_) => " Delete older images, or download this one to keep it.",
        _ => " Download it to keep it.",
    };
    format!(
        "Could not save the image in the gallery: {error}. It stays on this page until you leave.{advice}"
    )
}

/// The stored images.
#[component]
pub fn GalleryPanel(gallery: GalleryState, settings: GenSettings, units: UnitList) -> impl IntoView {
    gallery.load();
    let items = gallery.items;
    view! {
        <section class="panel gallery" data-testid="gallery">
            <h2>"Gallery"</h2>
            {move || gallery.error.get().map(|message| view! {
                <p class="warning" data-testid="gallery-error" role="alert">
                    {message} " "
                    <button class="secondary" on:click=move |_| gallery.error.set(None)>"Dismiss"</button>
                </p>
            })}
            {move || (items.with(Vec::is_empty) && !gallery.loading.get()).then(|| view! {
                <p class="hint" data-testid="gallery-empty">"The images you make are kept here, in this browser."</p>
            })}
            <ul class="gallery-items">
                <For each=move || items.get() key=Item::key let:item>
                    <GalleryEntry item gallery settings units />
                </For>
            </ul>
        </section>
    }
}

#[component]
fn GalleryEntry(item: Item, gallery: GalleryState, settings: GenSettings, units: UnitList) -> impl IntoView {
    let id = item.id;
    let file_name = item.file_name();
    let created = js_sys::Date::new(&JsValue::from_f64(item.created))
        .to_locale_string("default", &JsValue::UNDEFINED)
        .as_string()
        .unwrap_or_default();
    let summary = item.params.as_ref().map(|saved| {
        let p = &saved.params;
        format!("{}×{} · seed {} · {} steps · {}", p.width, p.height, p.seed, p.steps, p.scheduler)
    });
    let prompt = item.params.as_ref().map(|saved| saved.params.prompt.clone()).unwrap_or_default();
    let params = item.params.clone();
    view! {
        <li class="gallery-item" data-testid="gallery-item" data-id=(id as u64).to_string()>
            <a href=item.png_url.clone() target="_blank" rel="noopener">
                <img src=item.thumb_url.clone() alt=prompt.clone() title=item.parameters.clone() loading="lazy" />
            </a>
            <p class="gallery-caption">
                <span class="gallery-prompt">{prompt}</span>
                <span>{summary}</span>
                <span class="hint">{created}</span>
                {(!item.saved).then(|| view! { <span class="warning" data-testid="gallery-unsaved">"not saved"</span> })}
            </p>
            <div class="gallery-actions">
                <a class="button" data-testid="gallery-download" href=item.png_url.clone() download=file_name>
                    "Download"
                </a>
                <button
                    class="secondary"
                    data-testid="gallery-reuse"
                    disabled=params.is_none()
                    on:click=move |_| {
                        if let Some(parameters) = &params {
                            settings.apply(parameters);
                            units.restore(&parameters.units);
                        }
                    }
                >
                    "Use these parameters again"
                </button>
                <button class="secondary" data-testid="gallery-delete" on:click=move |_| gallery.delete(id)>
                    "Delete"
                </button>
            </div>
        </li>
    }
}
