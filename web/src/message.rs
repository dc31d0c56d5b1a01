//! Turning protocol messages into `postMessage` arguments.

use js_sys::{Array, Object, Uint8Array};
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};

/// Serialises `message` for `postMessage`, and lists the buffers of its top-level byte fields
/// (the `Uint8Array`s `serde_bytes` fields become) so that they can be transferred instead of
/// copied a second time. Each was created by this serialisation and is owned by nothing else.
pub fn to_js<T: Serialize>(message: &T) -> Result<(JsValue, Array), String> {
    let value = serde_wasm_bindgen::to_value(message).map_err(|e| format!("unserialisable message: {e}"))?;
    let transfer = Array::new();
    if let Some(object) = value.dyn_ref::<Object>() {
        for field in Object::values(object).iter() {
            if let Some(bytes) = field.dyn_ref::<Uint8Array>() {
                transfer.push(&bytes.buffer());
            }
        }
    }
    Ok((value, transfer))
}
