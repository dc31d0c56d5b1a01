//! IndexedDB's callbacks as futures, for the weights cache (in the GPU worker) and the gallery (on
//! the page). Errors are what IndexedDB reports: the `DOMException`, or `null` when it gives none
//! (an aborted transaction); each caller turns them into its own typed error.

use js_sys::Promise;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbRequest, IdbTransaction};

/// Resolves with an `IDBRequest`'s result once it succeeds.
pub async fn request(request: &IdbRequest) -> Result<JsValue, JsValue> {
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
    JsFuture::from(promise).await
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
