//! The device probe on the CPU backend and on burn-wgpu (lavapipe in CI), each checked against
//! an independent f64 implementation written here, and against each other.

use std::sync::OnceLock;

use burn::prelude::*;
use model::Precision;
use model::PrecisionExt;
use model::probe::{self, GROUP_NORM_EPS, Input, Op, ProbeOutput};

/// Relative L2 error allowed for f32 compute.
const F32_TOLERANCE: f64 = 1e-5;
/// Relative L2 error allowed for f16 compute (f16 has an 11-bit significand).
const F16_TOLERANCE: f64 = 5e-3;

fn wgpu() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| {
        Device::wgpu_options().init().unwrap_or_else(|e| {
            panic!("no wgpu adapter ({e}); install Mesa's lavapipe (mesa-vulkan-drivers)")
        })
    })
}

fn run(device: &Device, precision: Precision) -> Vec<ProbeOutput> {
    model::block_on(probe::run(device, precision)).expect("the probe runs")
}

/// ‖a − b‖ / ‖b‖ in f64.
fn relative_l2(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let diff: f64 = actual.iter().zip(expected).map(|(&a, &e)| (a as f64 - e).powi(2)).sum();
    let norm: f64 = expected.iter().map(|e| e * e).sum();
    (diff / norm).sqrt()
}

// ---- the f64 reference ----

fn f64s(input: &Input) -> Vec<f64> {
    input.values.iter().map(|&v| v as f64).collect()
}

/// NCHW convolution, stride 1, zero padding `padding`, output the input's size.
fn conv2d_reference(x: &Input, w: &Input, b: &Input, padding: usize) -> (Vec<usize>, Vec<f64>) {
    let (x_v, w_v, b_v) = (f64s(x), f64s(w), f64s(b));
    let [n, c_in, h, wd] = x.shape[..] else { unreachable!() };
    let [c_out, _, kh, kw] = w.shape[..] else { unreachable!() };
    let mut out = vec![0.0; n * c_out * h * wd];
    for (ni, oc, oy, ox) in itertools(n, c_out, h, wd) {
        let mut acc = b_v[oc];
        for ic in 0..c_in {
            for ky in 0..kh {
                for kx in 0..kw {
                    let (iy, ix) = (
                        oy as isize + ky as isize - padding as isize,
                        ox as isize + kx as isize - padding as isize,
                    );
                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                        continue;
                    }
                    let xi = ((ni * c_in + ic) * h + iy as usize) * wd + ix as usize;
                    let wi = ((oc * c_in + ic) * kh + ky) * kw + kx;
                    acc += x_v[xi] * w_v[wi];
                }
            }
        }
        out[((ni * c_out + oc) * h + oy) * wd + ox] = acc;
    }
    (vec![n, c_out, h, wd], out)
}

fn itertools(a: usize, b: usize, c: usize, d: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..a).flat_map(move |i| {
        (0..b).flat_map(move |j| (0..c).flat_map(move |k| (0..d).map(move |l| (i, j, k, l))))
    })
}

fn group_norm_reference(
    x: &Input,
    w: &Input,
    b: &Input,
    groups: usize,
    silu: bool,
) -> (Vec<usize>, Vec<f64>) {
    let (x_v, w_v, b_v) = (f64s(x), f64s(w), f64s(b));
    let [n, c, h, wd] = x.shape[..] else { unreachable!() };
    let per_group = c / groups * h * wd;
    let mut out = vec![0.0; x_v.len()];
    for ni in 0..n {
        for g in 0..groups {
            let start = (ni * groups + g) * per_group;
            let group = &x_v[start..start + per_group];
            let mean = group.iter().sum::<f64>() / per_group as f64;
            let var = group.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / per_group as f64;
            for (i, v) in group.iter().enumerate() {
                let channel = (start + i) / (h * wd) % c;
                let y = (v - mean) / (var + GROUP_NORM_EPS).sqrt() * w_v[channel] + b_v[channel];
                out[start + i] = if silu { y / (1.0 + (-y).exp()) } else { y };
            }
        }
    }
    (x.shape.clone(), out)
}

fn attention_reference(q: &Input, k: &Input, v: &Input) -> (Vec<usize>, Vec<f64>) {
    let (q_v, k_v, v_v) = (f64s(q), f64s(k), f64s(v));
    let [bh, nq, d] = q.shape[..] else { unreachable!() };
    let nk = k.shape[1];
    let mut out = vec![0.0; bh * nq * d];
    for b in 0..bh {
        for i in 0..nq {
            let scores: Vec<f64> = (0..nk)
                .map(|j| {
                    (0..d).map(|e| q_v[(b * nq + i) * d + e] * k_v[(b * nk + j) * d + e]).sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = exps.iter().sum();
            for e in 0..d {
                out[(b * nq + i) * d + e] =
                    (0..nk).map(|j| exps[j] / total * v_v[(b * nk + j) * d + e]).sum();
            }
        }
    }
    (vec![bh, nq, d], out)
}

fn reference() -> Vec<(&'static str, Vec<usize>, Vec<f64>)> {
    probe::cases()
        .into_iter()
        .map(|case| {
            let (shape, values) = match &case.op {
                Op::Conv2d { x, weight, bias, padding } => conv2d_reference(x, weight, bias, *padding),
                Op::GroupNorm { x, weight, bias, groups, silu } => {
                    group_norm_reference(x, weight, bias, *groups, *silu)
                }
                Op::Attention { q, k, v } => attention_reference(q, k, v),
            };
            (case.name, shape, values)
        })
        .collect()
}

fn assert_matches_reference(outputs: &[ProbeOutput], tolerance: f64, what: &str) {
    let expected = reference();
    assert_eq!(outputs.len(), expected.len());
    for (output, (name, shape, values)) in outputs.iter().zip(&expected) {
        assert_eq!(output.name, *name);
        assert_eq!(&output.shape, shape, "{what} {name}: shape");
        let error = relative_l2(&output.values, values);
        println!("{what} {name}: relative L2 error {error:.2e} (tolerance {tolerance:.0e})");
        assert!(error <= tolerance, "{what} {name}: relative L2 error {error:.3e} > {tolerance:.0e}");
    }
}

// ---- the tests ----

#[test]
fn cpu_f32_matches_reference() {
    assert_matches_reference(&run(&Device::flex(), Precision::F32), F32_TOLERANCE, "cpu f32");
}

#[test]
fn wgpu_f32_matches_reference() {
    assert_matches_reference(&run(wgpu(), Precision::F32), F32_TOLERANCE, "wgpu f32");
}

#[test]
fn wgpu_f16_matches_reference() {
    let device = wgpu();
    assert!(Precision::F16.is_supported_on(device), "lavapipe offers shader-f16; this adapter does not");
    assert_matches_reference(&run(device, Precision::F16), F16_TOLERANCE, "wgpu f16");
}

#[test]
fn cpu_and_wgpu_agree() {
    let cpu = run(&Device::flex(), Precision::F32);
    let gpu = run(wgpu(), Precision::F32);
    assert_eq!(cpu.len(), gpu.len());
    for (c, g) in cpu.iter().zip(&gpu) {
        assert_eq!((&c.name, &c.shape), (&g.name, &g.shape));
        let expected: Vec<f64> = c.values.iter().map(|&v| v as f64).collect();
        let error = relative_l2(&g.values, &expected);
        assert!(error <= F32_TOLERANCE, "{}: cpu and wgpu differ by {error:.3e}", c.name);
    }
}

#[test]
fn inputs_are_exact_in_f16() {
    // The probe's inputs are multiples of 1/1024 in [-1, 1]: f16 holds them exactly, so f16 and
    // f32 runs start from the same numbers.
    for case in probe::cases() {
        for v in case.op.inputs().iter().flat_map(|input| &input.values) {
            assert!((-1.0..=1.0).contains(v), "{}: {v}", case.name);
            assert_eq!((v * 1024.0).fract(), 0.0, "{}: {v}", case.name);
        }
    }
}
