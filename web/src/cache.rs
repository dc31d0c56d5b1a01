//! The weights cache: model files in IndexedDB, in chunks, so that a second visit loads offline.
//!
//! A 1.7 GB UNet cannot be one IndexedDB value (nor one `ArrayBuffer`), so each file is stored as
//! chunks of a fixed size keyed by `repo@revision/file#index`, each with its own SHA-256 (checked
//! on every read: a corrupted chunk is fetched again rather than fed to the model), plus one
//! [`Manifest`] per file. The store names carry a version: a future layout gets new stores, and
//! the old ones are deleted when the database is upgraded.
//!
//! Every IndexedDB call is asynchronous; [`request`] and [`transaction_done`] turn its events into
//! futures.

use std::fmt;

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DomException, IdbDatabase, IdbObjectStore, IdbOpenDbRequest, IdbRequest, IdbTransaction,
    IdbTransactionMode, WorkerGlobalScope,
};

/// The database, and its version: bump it (and the store names) when the layout changes.
pub const DATABASE: &str = "controlnet-weights";
const VERSION: u32 = 1;
/// Chunk records: `{ data: Uint8Array, sha256: hex }`, keyed by [`FileKey::chunk`].
pub const CHUNKS: &str = "chunks-v1";
/// Manifests: `{ size, chunk_bytes, sha256, complete }`, keyed by [`FileKey::manifest`].
pub const FILES: &str = "files-v1";

/// What went wrong in IndexedDB. DOM errors keep their `DOMException` name and message.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheError {
    /// The browser offers no IndexedDB here (some private modes).
    Unavailable(String),
    /// The origin's storage quota is exhausted (`QuotaExceededError`).
    QuotaExceeded(String),
    /// Any other `DOMException`, by name.
    Dom { name: String, message: String },
    /// A record that is not what this version writes.
    Malformed(String),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Unavailable(message) => write!(f, "IndexedDB is not available: {message}"),
            CacheError::QuotaExceeded(message) => write!(f, "the storage quota is exhausted: {message}"),
            CacheError::Dom { name, message } => write!(f, "IndexedDB failed ({name}): {message}"),
            CacheError::Malformed(what) => write!(f, "a cache record is malformed: {what}"),
        }
    }
}

impl std::error::Error for CacheError {}

impl CacheError {
    /// From whatever a DOM call threw or an IndexedDB request reported.
    pub fn from_js(error: &JsValue) -> Self {
        match error.dyn_ref::<DomException>() {
            Some(e) if e.name() == "QuotaExceededError" => CacheError::QuotaExceeded(e.message()),
            Some(e) => CacheError::Dom { name: e.name(), message: e.message() },
            None => CacheError::Dom {
                name: "Error".into(),
                message: error.as_string().unwrap_or_else(|| format!("{error:?}")),
            },
        }
    }

    fn from_dom(error: Option<DomException>, what: &str) -> Self {
        match error {
            Some(e) => Self::from_js(e.as_ref()),
            None => CacheError::Dom { name: "AbortError".into(), message: format!("{what} was aborted") },
        }
    }
}

/// Which file of which model: the cache's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileKey {
    pub repo: String,
    pub revision: String,
    pub file: String,
}

impl FileKey {
    pub fn manifest(&self) -> String {
        format!("{}@{}/{}", self.repo, self.revision, self.file)
    }

    pub fn chunk(&self, index: u64) -> String {
        format!("{}#{index:06}", self.manifest())
    }
}

/// What the cache knows of one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub size: u64,
    pub chunk_bytes: u64,
    /// The whole file's SHA-256 (hex), when the server told us or once it has been computed.
    pub sha256: Option<String>,
    /// Every chunk has been stored and the whole file verified.
    pub complete: bool,
}

impl Manifest {
    fn to_js(&self) -> Object {
        let object = Object::new();
        set(&object, "size", &JsValue::from_f64(self.size as f64));
        set(&object, "chunk_bytes", &JsValue::from_f64(self.chunk_bytes as f64));
        set(&object, "sha256", &self.sha256.as_deref().map_or(JsValue::NULL, JsValue::from_str));
        set(&object, "complete", &JsValue::from_bool(self.complete));
        object
    }

    fn from_js(value: &JsValue) -> Result<Self, CacheError> {
        let number = |name: &str| {
            get(value, name)
                .as_f64()
                .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                .map(|n| n as u64)
                .ok_or_else(|| CacheError::Malformed(format!("manifest field {name}")))
        };
        let chunk_bytes = number("chunk_bytes")?;
        if chunk_bytes == 0 {
            return Err(CacheError::Malformed("manifest chunk_bytes is 0".into()));
        }
        Ok(Manifest {
            size: number("size")?,
            chunk_bytes,
            sha256: get(value, "sha256").as_string(),
            complete: get(value, "complete").as_bool().unwrap_or(false),
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

/// The open weights database.
pub struct Cache {
    db: IdbDatabase,
}

impl Cache {
    /// Opens (and if needed creates or upgrades) the database.
    pub async fn open() -> Result<Self, CacheError> {
        let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
        let factory = scope
            .indexed_db()
            .map_err(|e| CacheError::Unavailable(CacheError::from_js(&e).to_string()))?
            .ok_or_else(|| CacheError::Unavailable("no indexedDB in this context".into()))?;
        let open: IdbOpenDbRequest =
            factory.open_with_u32(DATABASE, VERSION).map_err(|e| CacheError::from_js(&e))?;
        let upgrade = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            let Some(request) = event.target().and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok()) else {
                return;
            };
            let Ok(db) = request.result().and_then(|db| db.dyn_into::<IdbDatabase>()) else {
                return;
            };
            // Stores of older layouts go; this version's are created.
            let names = db.object_store_names();
            for i in 0..names.length() {
                if let Some(name) = names.item(i).filter(|n| n != CHUNKS && n != FILES) {
                    let _ = db.delete_object_store(&name);
                }
            }
            for store in [CHUNKS, FILES] {
                if !db.object_store_names().contains(store) {
                    let _ = db.create_object_store(store);
                }
            }
        });
        open.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
        let db = request(&open).await;
        open.set_onupgradeneeded(None);
        drop(upgrade);
        let db: IdbDatabase = db?.dyn_into().map_err(|_| CacheError::Malformed("the database".into()))?;
        Ok(Cache { db })
    }

    fn store(
        &self,
        name: &str,
        mode: IdbTransactionMode,
    ) -> Result<(IdbTransaction, IdbObjectStore), CacheError> {
        let tx = self.db.transaction_with_str_and_mode(name, mode).map_err(|e| CacheError::from_js(&e))?;
        let store = tx.object_store(name).map_err(|e| CacheError::from_js(&e))?;
        Ok((tx, store))
    }

    pub async fn manifest(&self, key: &FileKey) -> Result<Option<Manifest>, CacheError> {
        let (_, store) = self.store(FILES, IdbTransactionMode::Readonly)?;
        let value = request(&store.get(&key.manifest().into()).map_err(|e| CacheError::from_js(&e))?).await?;
        if value.is_undefined() { Ok(None) } else { Manifest::from_js(&value).map(Some) }
    }

    pub async fn put_manifest(&self, key: &FileKey, manifest: &Manifest) -> Result<(), CacheError> {
        let (tx, store) = self.store(FILES, IdbTransactionMode::Readwrite)?;
        store.put_with_key(&manifest.to_js(), &key.manifest().into()).map_err(|e| CacheError::from_js(&e))?;
        transaction_done(&tx).await
    }

    /// Whether chunk `index` has a record (unverified).
    pub async fn has_chunk(&self, key: &FileKey, index: u64) -> Result<bool, CacheError> {
        let (_, store) = self.store(CHUNKS, IdbTransactionMode::Readonly)?;
        let count = store.count_with_key(&key.chunk(index).into()).map_err(|e| CacheError::from_js(&e))?;
        Ok(request(&count).await?.as_f64().unwrap_or(0.0) > 0.0)
    }

    /// Chunk `index` and the SHA-256 recorded when it was stored; the caller verifies them.
    pub async fn chunk(&self, key: &FileKey, index: u64) -> Result<Option<(Uint8Array, String)>, CacheError> {
        let (_, store) = self.store(CHUNKS, IdbTransactionMode::Readonly)?;
        let value =
            request(&store.get(&key.chunk(index).into()).map_err(|e| CacheError::from_js(&e))?).await?;
        if value.is_undefined() {
            return Ok(None);
        }
        let data = get(&value, "data")
            .dyn_into::<Uint8Array>()
            .map_err(|_| CacheError::Malformed(format!("chunk {} has no data", key.chunk(index))))?;
        let sha256 = get(&value, "sha256")
            .as_string()
            .ok_or_else(|| CacheError::Malformed(format!("chunk {} has no sha256", key.chunk(index))))?;
        Ok(Some((data, sha256)))
    }

    /// Stores chunk `index` (a copy into a JS buffer), waiting until it is committed.
    pub async fn put_chunk(
        &self,
        key: &FileKey,
        index: u64,
        data: &[u8],
        sha256: &str,
    ) -> Result<(), CacheError> {
        let record = Object::new();
        set(&record, "data", &Uint8Array::from(data));
        set(&record, "sha256", &JsValue::from_str(sha256));
        let (tx, store) = self.store(CHUNKS, IdbTransactionMode::Readwrite)?;
        store.put_with_key(&record, &key.chunk(index).into()).map_err(|e| CacheError::from_js(&e))?;
        transaction_done(&tx).await
    }

    /// Every file the cache has a manifest for: (key, manifest).
    pub async fn list(&self) -> Result<Vec<(String, Manifest)>, CacheError> {
        let (_, store) = self.store(FILES, IdbTransactionMode::Readonly)?;
        let keys: Array =
            request(&store.get_all_keys().map_err(|e| CacheError::from_js(&e))?).await?.unchecked_into();
        let values: Array =
            request(&store.get_all().map_err(|e| CacheError::from_js(&e))?).await?.unchecked_into();
        keys.iter()
            .zip(values.iter())
            .map(|(key, value)| Ok((key.as_string().unwrap_or_default(), Manifest::from_js(&value)?)))
            .collect()
    }

    /// Deletes a file: its manifest and every chunk.
    pub async fn delete(&self, key: &FileKey) -> Result<(), CacheError> {
        let tx = self
            .db
            .transaction_with_str_sequence_and_mode(
                &Array::of2(&CHUNKS.into(), &FILES.into()),
                IdbTransactionMode::Readwrite,
            )
            .map_err(|e| CacheError::from_js(&e))?;
        let files = tx.object_store(FILES).map_err(|e| CacheError::from_js(&e))?;
        let chunks = tx.object_store(CHUNKS).map_err(|e| CacheError::from_js(&e))?;
        files.delete(&key.manifest().into()).map_err(|e| CacheError::from_js(&e))?;
        // The chunk keys of this file sort between `…#` and `…#~`.
        let prefix = format!("{}#", key.manifest());
        let range = web_sys::IdbKeyRange::bound(&prefix.clone().into(), &format!("{prefix}~").into())
            .map_err(|e| CacheError::from_js(&e))?;
        chunks.delete(&range).map_err(|e| CacheError::from_js(&e))?;
        transaction_done(&tx).await
    }
}

/// Resolves with an `IDBRequest`'s result once it succeeds.
pub async fn request(request: &IdbRequest) -> Result<JsValue, CacheError> {
    let promise = Promise::new(&mut |resolve, reject| {
        let on_success = Closure::once_into_js(move |event: web_sys::Event| {
            let result = event
                .target()
                .and_then(|t| t.dyn_into::<IdbRequest>().ok())
                .and_then(|r| r.result().ok())
                .unwrap_or(JsValue::UNDEFINED);
            let _ = resolve.call1(&JsValue::NULL, &result);
        });
        let on_error = Closure::once_into_js(move |event: web_sys::Event| {
            let error = event
                .target()
                .and_then(|t| t.dyn_into::<IdbRequest>().ok())
                .and_then(|r| r.error().ok().flatten())
                .map_or(JsValue::NULL, JsValue::from);
            // Handled here: keep it from also aborting the transaction as an uncaught error.
            event.prevent_default();
            let _ = reject.call1(&JsValue::NULL, &error);
        });
        request.set_onsuccess(Some(on_success.unchecked_ref()));
        request.set_onerror(Some(on_error.unchecked_ref()));
    });
    JsFuture::from(promise).await.map_err(|e| {
        if e.is_null() { CacheError::from_dom(None, "the request") } else { CacheError::from_js(&e) }
    })
}

/// Resolves once `tx` has committed; its error (a quota error, typically) otherwise.
pub async fn transaction_done(tx: &IdbTransaction) -> Result<(), CacheError> {
    let promise = Promise::new(&mut |resolve, reject| {
        let on_complete = Closure::once_into_js(move || {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let reject_abort = reject.clone();
        let tx_error = tx.clone();
        let on_error = Closure::once_into_js(move || {
            let _ = reject.call1(&JsValue::NULL, &tx_error.error().map_or(JsValue::NULL, JsValue::from));
        });
        let tx_abort = tx.clone();
        let on_abort = Closure::once_into_js(move || {
            let _ =
                reject_abort.call1(&JsValue::NULL, &tx_abort.error().map_or(JsValue::NULL, JsValue::from));
        });
        tx.set_oncomplete(Some(on_complete.unchecked_ref()));
        tx.set_onerror(Some(on_error.unchecked_ref()));
        tx.set_onabort(Some(on_abort.unchecked_ref()));
    });
    JsFuture::from(promise).await.map(|_| ()).map_err(|e| {
        if e.is_null() { CacheError::from_dom(None, "the transaction") } else { CacheError::from_js(&e) }
    })
}
