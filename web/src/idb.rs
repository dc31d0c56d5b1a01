//! IndexedDB's callbacks as futures, for the weights cache (in the GPU worker) and the gallery (on
//! the page). Errors are what IndexedDB reports: the `DOMException`, or `null` when it gives none
//! (an aborted transaction); each caller turns them into its own typed error.

use js_sys::Promise;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbFactory, IdbOpenDbRequest, IdbRequest, IdbTransaction};

/// Resolves with an `IDBRequest`'s result once it succeeds.
pub async fn request(request: &IdbRequest) -> Result<JsValue, JsValue> {
    JsFuture::from(request_promise(request)).await
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
pub async fn transaction_done(tx: &IdbTransaction) -> Result<(), JsValue> {
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
    JsFuture::from(promise).await.map(|_| ())
}

/// Opens database `name` at `version` from `factory` (the window's or a worker's), creating or
/// upgrading it to hold exactly `stores` (the stores of other layouts are deleted). The
/// connection closes itself when another tab asks for a newer version (`versionchange`), so an
/// upgrade is never blocked by this one; its later transactions then fail like any other, which
/// the caller handles as an unavailable database. Close it with `IdbDatabase::close` when done.
pub async fn open(
    factory: &IdbFactory,
    name: &str,
    version: u32,
    stores: &'static [&'static str],
) -> Result<IdbDatabase, JsValue> {
    let open: IdbOpenDbRequest = factory.open_with_u32(name, version)?;
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
    let db: IdbDatabase = db?.dyn_into()?;
    let close = Closure::<dyn FnMut(web_sys::Event)>::new({
        let db = db.clone();
        move |_: web_sys::Event| db.close()
    });
    db.set_onversionchange(Some(close.as_ref().unchecked_ref()));
    // The handler lives as long as the connection can receive the event.
    close.forget();
    Ok(db)
}
