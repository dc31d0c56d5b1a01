//! The gallery's store: every generated image in IndexedDB, with what made it, so that it
//! survives a reload.
//!
//! One record per image, keyed by its id (the time it was made, in milliseconds): the PNG as
//! generated (with its `parameters` text chunk), the worker's thumbnail, and A1111's parameters
//! text, which is also what "use these parameters again" reads back (records written before
//! also hold a `params` JSON, now unread). The store's name carries a version, as the
//! weights cache's do: a future layout gets a new store and the old one is deleted on upgrade.
//!
//! IndexedDB goes through `web::idb` (its events as futures, the one `open`, the one error
//! type), as the weights cache in the worker does; this store runs on the Window, and its records
//! are serde structs.

use js_sys::{Array, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web::idb::{IdbError, request, transaction_done};
use web_sys::{IdbDatabase, IdbObjectStore, IdbTransaction, IdbTransactionMode};

pub const DATABASE: &str = "controlnet-gallery";
const VERSION: u32 = 1;
/// Image records (see [`Record`]), keyed by their id.
pub const IMAGES: &str = "images-v1";

/// One image of the gallery as stored: `{ id, created, png, thumbnail, parameters }`, the bytes
/// as `Uint8Array`s (kept as they are, never copied into the wasm memory:
/// `serde_wasm_bindgen::preserve`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    /// The key: the creation time in milliseconds (made unique by the caller).
    pub id: f64,
    /// When it was made, in milliseconds since the epoch.
    pub created: f64,
    #[serde(with = "serde_wasm_bindgen::preserve")]
    pub png: Uint8Array,
    #[serde(with = "serde_wasm_bindgen::preserve")]
    pub thumbnail: Uint8Array,
    /// A1111's parameters text, as in the PNG.
    pub parameters: String,
}

impl Record {
    fn to_js(&self) -> Result<JsValue, IdbError> {
        serde_wasm_bindgen::to_value(self).map_err(|e| IdbError::Malformed(e.to_string()))
    }

    fn from_js(value: JsValue) -> Result<Self, IdbError> {
        let record: Record =
            serde_wasm_bindgen::from_value(value).map_err(|e| IdbError::Malformed(e.to_string()))?;
        if !(record.id.is_finite() && record.created.is_finite()) {
            return Err(IdbError::Malformed(format!("the times {} and {}", record.id, record.created)));
        }
        Ok(record)
    }
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
    pub async fn open() -> Result<Self, IdbError> {
        let window = web_sys::window().ok_or_else(|| IdbError::Unavailable("no window".into()))?;
        let db = web::idb::open(window.indexed_db(), DATABASE, VERSION, &[IMAGES]).await?;
        Ok(GalleryDb { db })
    }

    fn store(&self, mode: IdbTransactionMode) -> Result<(IdbTransaction, IdbObjectStore), IdbError> {
        let tx = self.db.transaction_with_str_and_mode(IMAGES, mode).map_err(|e| IdbError::from_js(&e))?;
        let store = tx.object_store(IMAGES).map_err(|e| IdbError::from_js(&e))?;
        Ok((tx, store))
    }

    /// Every record, oldest first (ids are creation times). A malformed record is an error for
    /// that record alone: the others are still shown.
    pub async fn list(&self) -> Result<Vec<Result<Record, IdbError>>, IdbError> {
        let (_, store) = self.store(IdbTransactionMode::Readonly)?;
        let values: Array =
            request(&store.get_all().map_err(|e| IdbError::from_js(&e))?).await?.unchecked_into();
        Ok(values.iter().map(Record::from_js).collect())
    }

    /// Stores `record`, waiting until it is committed.
    pub async fn add(&self, record: &Record) -> Result<(), IdbError> {
        let (tx, store) = self.store(IdbTransactionMode::Readwrite)?;
        store
            .put_with_key(&record.to_js()?, &JsValue::from_f64(record.id))
            .map_err(|e| IdbError::from_js(&e))?;
        transaction_done(&tx).await
    }

    pub async fn delete(&self, id: f64) -> Result<(), IdbError> {
        let (tx, store) = self.store(IdbTransactionMode::Readwrite)?;
        store.delete(&JsValue::from_f64(id)).map_err(|e| IdbError::from_js(&e))?;
        transaction_done(&tx).await
    }
}
