//! Where a step's time goes: with profiling on, each op that `crate::nn::ops` runs first waits for
//! its input, then runs, then waits for its output, and the time is added to the op's class.
//! Native only (waiting blocks; a browser never blocks), and slower than a normal run by one
//! read-back per op: the classes' shares are the point, not their sum.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::prelude::*;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<String, Total>> = Mutex::new(BTreeMap::new());

/// One class of ops in a profile.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Total {
    /// Milliseconds, waits for the output included.
    pub ms: f64,
    /// How many ops ran.
    pub count: usize,
}

/// Turns profiling on or off (off: `measure` only runs the op), clearing the totals.
pub fn enable(on: bool) {
    take();
    ENABLED.store(on, Ordering::SeqCst);
}

/// The totals since the last `take` or `enable`, by class; clears them.
pub fn take() -> BTreeMap<String, Total> {
    std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// `op(input)`, timed under `class` while profiling is on. Waiting for `input` waits for all
/// work queued before it too (one in-order queue), other inputs of the op included.
pub fn measure<const D: usize, const E: usize>(
    class: impl FnOnce() -> String,
    input: Tensor<D>,
    op: impl FnOnce(Tensor<D>) -> Tensor<E>,
) -> Tensor<E> {
    if !ENABLED.load(Ordering::Relaxed) {
        return op(input);
    }
    wait(&input);
    let started = Instant::now();
    let out = op(input);
    wait(&out);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let mut totals = TOTALS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let total = totals.entry(class()).or_default();
    total.ms += ms;
    total.count += 1;
    out
}

/// Blocks until `tensor` is computed, by reading one element back.
fn wait<const D: usize>(tensor: &Tensor<D>) {
    let one = tensor.clone().slice(std::array::from_fn::<_, D, _>(|_| 0..1));
    let _ = crate::block_on(one.into_data_async());
}
