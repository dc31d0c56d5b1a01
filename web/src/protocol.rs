//! Messages between the UI thread and the GPU worker.
//!
//! Both directions are serde enums sent through `postMessage` with `serde-wasm-bindgen`. The
//! worker answers each request with exactly one terminal response (`ProbeDone` or `Error`) carrying
//! the request's `id`.

use serde::{Deserialize, Serialize};

/// Compute precision, as the UI chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// UI → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// Run the device probe (conv2d, group norm, attention on fixed inputs) in `precision`.
    Probe { id: u32, precision: Precision },
}

/// Worker → UI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    /// The worker's message handler is installed. Messages posted to a worker before that are
    /// lost (its WebAssembly is still compiling), so the UI holds requests back until it sees this.
    WorkerReady,
    /// The worker has acquired its GPU device.
    DeviceReady {
        /// Time to acquire the adapter and device, in milliseconds.
        init_ms: f64,
        /// Whether the device computes in f16.
        f16: bool,
    },
    /// The probe's results.
    ProbeDone {
        id: u32,
        precision: Precision,
        /// Wall time of the computation and the asynchronous read-back, in milliseconds. The first
        /// run of a precision includes compiling its shaders.
        elapsed_ms: f64,
        outputs: Vec<ProbeOutput>,
    },
    /// The request failed; `message` is meant for the user.
    Error { id: Option<u32>, message: String },
}

/// One tensor the probe computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutput {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let messages = [
            Response::WorkerReady,
            Response::DeviceReady { init_ms: 12.5, f16: true },
            Response::ProbeDone {
                id: 3,
                precision: Precision::F16,
                elapsed_ms: 1.0,
                outputs: vec![ProbeOutput {
                    name: "conv2d".into(),
                    shape: vec![1, 2],
                    values: vec![0.5, -1.0],
                }],
            },
            Response::Error { id: None, message: "no adapter".into() },
        ];
        for message in messages {
            let json = serde_json::to_string(&message).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), message, "{json}");
        }
        let request = Request::Probe { id: 1, precision: Precision::F32 };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(json, r#"{"type":"Probe","id":1,"precision":"f32"}"#);
    }
}
