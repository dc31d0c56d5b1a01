//! A training run's log, as `controlnet train` writes it and the page's Learn view reads it: one
//! JSON object a line in [`LOG_FILE`], and the ControlNet runs' sample images beside it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The log's file name in a run's folder.
pub const LOG_FILE: &str = "log.jsonl";

/// A run's sample image after `step` steps, in its folder (`step-000250.png`).
pub fn sample_file(step: u64) -> String {
    format!("step-{step:06}.png")
}

/// The step of a sample image's file name ([`sample_file`]'s inverse).
pub fn sample_step(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_prefix("step-")?.strip_suffix(".png")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One optimiser step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Steps done, from 1.
    pub step: u64,
    pub loss: f64,
    /// The loss's exponential moving average (0.98), from the run's first step.
    pub loss_ema: f64,
    /// The learning rate the step took (the schedule's, where the run has one).
    pub lr: f64,
    /// The gradients' global norm before clipping (absent where none was computed).
    pub grad_norm: Option<f64>,
    /// A ControlNet run's zero convolutions, shallow to deep (the down blocks', then the middle
    /// block's), after the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zero_convs: Vec<ZeroConv>,
    /// A ControlNet run's other zero convolution: the hint encoder's last, where the condition
    /// enters the trainable copy (its weight's L2 norm after the step; absent in older logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint_conv_norm: Option<f64>,
    /// More of the loss's terms, by name (a VAE's `reconstruction` and `kl`).
    #[serde(flatten)]
    pub terms: BTreeMap<String, f64>,
}

impl LogLine {
    /// The loss's moving average after a step with `loss`, from the one before it (none before
    /// the first step).
    pub fn next_ema(previous: Option<f64>, loss: f64) -> f64 {
        previous.map_or(loss, |ema| 0.98 * ema + 0.02 * loss)
    }
}

/// A zero convolution after a step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZeroConv {
    /// The L2 norm of its weight after the step (0 before the first).
    pub weight_norm: f64,
    /// The mean magnitude of the residual it added in the step's forward pass (before the
    /// step's update: 0 in the first).
    pub output_mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_names_round_trip() {
        assert_eq!(sample_file(250), "step-000250.png");
        assert_eq!(sample_step(&sample_file(250)), Some(250));
        assert_eq!(sample_step(&sample_file(12_345_678)), Some(12_345_678));
        for other in ["step-.png", "step-12a.png", "log.jsonl", "step-000250.jpg", "x-000250.png"] {
            assert_eq!(sample_step(other), None, "{other}");
        }
    }

    #[test]
    fn log_lines_read_what_the_cli_writes() {
        let line = r#"{"step":2,"loss":0.5,"loss_ema":0.9,"lr":0.0002,"grad_norm":null,"zero_convs":[{"weight_norm":0.01,"output_mean":0.002}]}"#;
        let read: LogLine = serde_json::from_str(line).unwrap();
        assert_eq!(read.zero_convs, vec![ZeroConv { weight_norm: 0.01, output_mean: 0.002 }]);
        assert_eq!(read.grad_norm, None);
        assert!(read.terms.is_empty());
        let vae = r#"{"step":1,"loss":0.7,"loss_ema":0.7,"lr":0.001,"grad_norm":7.0,"kl":15.5,"reconstruction":0.69}"#;
        let read: LogLine = serde_json::from_str(vae).unwrap();
        assert_eq!(
            read.terms,
            BTreeMap::from([("kl".to_owned(), 15.5), ("reconstruction".to_owned(), 0.69)])
        );
        assert_eq!(serde_json::from_str::<LogLine>(&serde_json::to_string(&read).unwrap()).unwrap(), read);
    }
}
