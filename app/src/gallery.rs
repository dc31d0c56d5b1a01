//! The gallery's store: every generated image in IndexedDB, with what made it, so that it
//! survives a reload.
//!
//! One record per image, keyed by its id (the time it was made, in milliseconds): the PNG as
//! generated (with its `parameters` text chunk), the worker's thumbnail, and A1111's parameters
//! text, which is also what "use these parameters again" reads back (records written before
//! also hold a `params` JSON, now unread). The store's name carries a version, as the
//! weights cache's do: a future layout gets a new store and the old one is deleted on upgrade.
//!
//! IndexedDB's events become futures in [`request`] and [`transaction_done`], as in the weights
//! cache (`web::cache`, which lives in the worker and uses the worker's scope); this one runs on
//! the Window.

use std::fmt;

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DomException, IdbDatabase, IdbObjectStore, IdbRequest, IdbTransaction, IdbTransactionMode};

pub const DATABASE: &str = "controlnet-gallery";
const VERSION: u32 = 1;
/// Image records (see [`Record`]), keyed by their id.
pub const IMAGES: &str = "images-v1";

/// What went wrong in IndexedDB. DOM errors keep their `DOMException` name and message.
#[derive(Clone, Debug, PartialEq)]
pub enum GalleryError {
    /// The browser offers no IndexedDB here (some private modes).
    Unavailable(String),
    /// The origin's storage quota is exhausted (`QuotaExceededError`).
    QuotaExceeded(String),
    /// Any other `DOMException`, by name.
    Dom { name: String, message: String },
    /// A record that is not what this version writes.
    Malformed(String),
}

impl fmt::Display for GalleryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GalleryError::Unavailable(message) => write!(f, "IndexedDB is not available: {message}"),
            GalleryError::QuotaExceeded(message) => {
                write!(f, "the browser's storage for this site is full ({message})")
            }
            GalleryError::Dom { name, message } => write!(f, "IndexedDB failed ({name}): {message}"),
            GalleryError::Malformed(what) => write!(f, "a gallery record is malformed: {what}"),
        }
    }
}

impl std::error::Error for GalleryError {}

impl GalleryError {
    /// From whatever a DOM call threw or an IndexedDB request reported.
    pub fn from_js(error: &JsValue) -> Self {
        match error.dyn_ref::<DomException>() {
            Some(e) if e.name() == "QuotaExceededError" => GalleryError::QuotaExceeded(e.message()),
            Some(e) => GalleryError::Dom { name: e.name(), message: e.message() },
            None if error.is_null() || error.is_undefined() => {
                GalleryError::Dom { name: "AbortError".into(), message: "the request was aborted".into() }
            }
            None => GalleryError::Dom {
                name: "Error".into(),
                message: error.as_string().unwrap_or_else(|| format!("{error:?}")),
            },
        }
    }
}

/// One image of the gallery as stored: `{ id, created, png, thumbnail, parameters }`, the bytes
/// as `Uint8Array`s.
pub struct Record {
    /// The key: the creation time in milliseconds (made unique by the caller).
    pub id: f64,
    /// When it was made, in milliseconds since the epoch.
    pub created: f64,
    pub png: Uint8Array,
    pub thumbnail: Uint8Array,
    /// A1111's parameters text, as in the PNG.
    pub parameters: String,
}

impl Record {
    fn to_js(&self) -> Object {
        let object = Object::new();
        set(&object, "id", &JsValue::from_f64(self.id));
        set(&object, "created", &JsValue::from_f64(self.created));
        set(&object, "png", &self.png);
        set(&object, "thumbnail", &self.thumbnail);
        set(&object, "parameters", &JsValue::from_str(&self.parameters));
        object
    }

    fn from_js(value: &JsValue) -> Result<Self, GalleryError> {
        let number = |name: &str| {
            get(value, name)
                .as_f64()
                .filter(|n| n.is_finite())
                .ok_or_else(|| GalleryError::Malformed(format!("field {name}")))
        };
        let bytes = |name: &str| {
            get(value, name)
                .dyn_into::<Uint8Array>()
                .map_err(|_| GalleryError::Malformed(format!("field {name}")))
        };
        let text = |name: &str| {
            get(value, name).as_string().ok_or_else(|| GalleryError::Malformed(format!("field {name}")))
        };
        Ok(Record {
            id: number("id")?,
            created: number("created")?,
            png: bytes("png")?,
            thumbnail: bytes("thumbnail")?,
            parameters: text("parameters")?,
        })
    }
}

fn set(object: &Object, name: &str, value: &JsValue) {
    // Setting a property on a fresh plain object cannot fail.
    let _ = Reflect::set(object, &JsValue::from_str(name), value);
}

fn get(value: &JsValue, name: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// The open gallery database; its connection closes when it is dropped.
pub struct GalleryDb {
    db: IdbDatabase,
}

impl Drop for GalleryDb {
    fn drop(&mut self) {
        self.db.close();
    }
}

impl GalleryDb {
    /// Opens (and if needed creates or upgrades) the database.
    pub async fn open() -> Result<Self, GalleryError> {
        let window = web_sys::window().ok_or_else(|| GalleryError::Unavailable("no window".into()))?;
        let factory = window
            .indexed_db()
            .map_err(|e| GalleryError::Unavailable(GalleryError::from_js(&e).to_string()))?
            .ok_or_else(|| GalleryError::Unavailable("no indexedDB in this context".into()))?;
        let db = web::idb::open(&factory, DATABASE, VERSION, &[IMAGES])
            .await
            .map_err(|e| GalleryError::from_js(&e))?;
        Ok(GalleryDb { db })
    }

    fn store(&self, mode: IdbTransactionMode) -> Result<(IdbTransaction, IdbObjectStore), GalleryError> {
        let tx =
            self.db.transaction_with_str_and_mode(IMAGES, mode).map_err(|e| GalleryError::from_js(&e))?;
        let store = tx.object_store(IMAGES).map_err(|e| GalleryError::from_js(&e))?;
        Ok((tx, store))
    }

    /// Every record, oldest first (ids are creation times). A malformed record is an error for
    /// that record alone: the others are still shown.
    pub async fn list(&self) -> Result<Vec<Result<Record, GalleryError>>, GalleryError> {
        let (_, store) = self.store(IdbTransactionMode::Readonly)?;
        let values: Array =
            request(&store.get_all().map_err(|e| GalleryError::from_js(&e))?).await?.unchecked_into();
        Ok(values.iter().map(|value| Record::from_js(&value)).collect())
    }

    /// Stores `record`, waiting until it is committed.
    pub async fn add(&self, record: &Record) -> Result<(), GalleryError> {
        let (tx, store) = self.store(IdbTransactionMode::Readwrite)?;
        store
            .put_with_key(&record.to_js(), &JsValue::from_f64(record.id))
            .map_err(|e| GalleryError::from_js(&e))?;
        transaction_done(&tx).await
    }

    pub async fn delete(&self, id: f64) -> Result<(), GalleryError> {
        let (tx, store) = self.store(IdbTransactionMode::Readwrite)?;
        store.delete(&JsValue::from_f64(id)).map_err(|e| GalleryError::from_js(&e))?;
        transaction_done(&tx).await
    }
}

/// Resolves with an `IDBRequest`'s result once it succeeds.
async fn request(request: &IdbRequest) -> Result<JsValue, GalleryError> {
    web::idb::request(request).await.map_err(|e| GalleryError::from_js(&e))
}

/// Resolves once `tx` has committed; its error (a quota error, typically) otherwise.
async fn transaction_done(tx: &IdbTransaction) -> Result<(), GalleryError> {
    web::idb::transaction_done(tx).await.map_err(|e| GalleryError::from_js(&e))
}
