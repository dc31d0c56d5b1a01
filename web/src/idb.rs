//! IndexedDB for the weights cache (in the GPU worker) and the gallery (on the page): its
//! callbacks as futures, one `open` with the upgrade, and one error type, [`IdbError`], built from
//! what IndexedDB reports (the `DOMException`, or `null` when it gives none: an aborted request or
//! transaction).

use std::fmt;

use js_sys::Promise;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DomException, IdbDatabase, IdbFactory, IdbOpenDbRequest, IdbRequest, IdbTransaction};

/// What went wrong in IndexedDB. DOM errors keep their `DOMException` name and message.
#[derive(Clone, Debug, PartialEq)]
pub enum IdbError {
    /// The browser offers no IndexedDB here (some private modes).
    Unavailable(String),
    /// The origin's storage quota is exhausted (`QuotaExceededError`).
    QuotaExceeded(String),
    /// Any other `DOMException`, by name.
    Dom { name: String, message: String },
    /// A record that is not what this version writes.
    Malformed(String),
    /// The origin private file system (the weights cache's chunk files) failed, by the
    /// `DOMException`'s name.
    Files { name: String, message: String },
    /// A chunk file is open in another tab (its worker holds the file's lock).
    InUse(String),
}

impl fmt::Display for IdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdbError::Unavailable(message) => write!(f, "IndexedDB is not available: {message}"),
            IdbError::QuotaExceeded(message) => {
                write!(f, "the browser's storage for this site is full ({message})")
            }
            IdbError::Dom { name, message } => write!(f, "IndexedDB failed ({name}): {message}"),
            IdbError::Malformed(what) => write!(f, "a stored record is malformed: {what}"),
            IdbError::Files { name, message } => {
                write!(f, "the origin private file system failed ({name}): {message}")
            }
            IdbError::InUse(message) => {
                write!(
                    f,
                    "another tab of this site is using the cached file; close it or try again ({message})"
                )
            }
        }
    }
}

impl std::error::Error for IdbError {}

impl IdbError {
    /// From whatever a DOM call threw or an IndexedDB request reported (`null` or `undefined`:
    /// an abort with no error of its own).
    pub fn from_js(error: &JsValue) -> Self {
        match error.dyn_ref::<DomException>() {
            Some(e) if e.name() == "QuotaExceededError" => IdbError::QuotaExceeded(e.message()),
            Some(e) => IdbError::Dom { name: e.name(), message: e.message() },
            None if error.is_null() || error.is_undefined() => {
                IdbError::Dom { name: "AbortError".into(), message: "the request was aborted".into() }
            }
            None => IdbError::Dom {
                name: "Error".into(),
                message: error.as_string().unwrap_or_else(|| format!("{error:?}")),
            },
        }
    }
}

impl IdbError {
    /// From what a file system call threw: a full quota as IndexedDB's, a locked file as
    /// [`IdbError::InUse`], any other error by its name.
    pub fn from_files(error: &JsValue) -> Self {
        match Self::from_js(error) {
            IdbError::Dom { name, message } if name == "NoModificationAllowedError" => {
                IdbError::InUse(message)
            }
            IdbError::Dom { name, message } => IdbError::Files { name, message },
            other => other,
        }
    }
}

/// Resolves with an `IDBRequest`'s result once it succeeds.
pub async fn request(request: &IdbRequest) -> Result<JsValue, IdbError> {
    JsFuture::from(request_promise(request)).await.map_err(|e| IdbError::from_js(&e))
}

/// A promise of an `IDBRequest`'s result, its handlers attached now: a request started ahead of
/// time (the next chunk, read while this one is used) cannot finish unheard.
pub fn request_promise(request: &IdbRequest) -> Promise {
    Promise::new(&mut |resolve, reject| {
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
    })
}

/// Resolves once `tx` has committed; its error (a quota error, typically) otherwise.
pub async fn transaction_done(tx: &IdbTransaction) -> Result<(), IdbError> {
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
    JsFuture::from(promise).await.map(|_| ()).map_err(|e| IdbError::from_js(&e))
}

/// Opens database `name` at `version` from `factory` (the window's or a worker's), creating or
/// upgrading it to hold exactly `stores` (the stores of other layouts are deleted). The
/// connection closes itself when another tab asks for a newer version (`versionchange`), so an
/// upgrade is never blocked by this one; its later transactions then fail like any other, which
/// the caller handles as an unavailable database. Close it with `IdbDatabase::close` when done.
///
/// `factory` is what the global scope's `indexedDB` gave (`Window::indexed_db`,
/// `WorkerGlobalScope::indexed_db`): where it threw or is missing, IndexedDB is unavailable.
pub async fn open(
    factory: Result<Option<IdbFactory>, JsValue>,
    name: &str,
    version: u32,
    stores: &'static [&'static str],
) -> Result<IdbDatabase, IdbError> {
    let factory = factory
        .map_err(|e| IdbError::Unavailable(IdbError::from_js(&e).to_string()))?
        .ok_or_else(|| IdbError::Unavailable("no indexedDB in this context".into()))?;
    let open: IdbOpenDbRequest = factory.open_with_u32(name, version).map_err(|e| IdbError::from_js(&e))?;
    let upgrade = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
        let Some(request) = event.target().and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok()) else {
            return;
        };
        let Ok(db) = request.result().and_then(|db| db.dyn_into::<IdbDatabase>()) else {
            return;
        };
        let names = db.object_store_names();
        for i in 0..names.length() {
            if let Some(name) = names.item(i).filter(|n| !stores.contains(&n.as_str())) {
                let _ = db.delete_object_store(&name);
            }
        }
        for store in stores {
            if !db.object_store_names().contains(store) {
                let _ = db.create_object_store(store);
            }
        }
    });
    open.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let db = request(&open).await;
    open.set_onupgradeneeded(None);
    drop(upgrade);
    let db: IdbDatabase = db?.dyn_into().map_err(|e| IdbError::from_js(&e))?;
    let close = Closure::<dyn FnMut(web_sys::Event)>::new({
        let db = db.clone();
        move |_: web_sys::Event| db.close()
    });
    db.set_onversionchange(Some(close.as_ref().unchecked_ref()));
    // The handler lives as long as the connection can receive the event.
    close.forget();
    Ok(db)
}
