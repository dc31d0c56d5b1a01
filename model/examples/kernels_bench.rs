//! Timings of the hand-written kernels (`model::kernels`) beside burn's reference ops, as JSON
//! lines on stdout: one per (op, kernel, precision, shape) for attention, convolution and group
//! norm + SiLU, then one per (kernel set, precision) for a whole ControlNet + UNet CFG step, its
//! profile (time per class of op, `model::kernels::profile`) and a VAE decode, with every layer
//! using that set (`model::kernels::select`).
//!
//! ```text
//! cargo run --release -p model --features kernels --example kernels_bench             # SD1.5 shapes at 512², CFG
//! cargo run --release -p model --features kernels --example kernels_bench -- --tiny   # minutes on lavapipe
//! options: --tiny, --iterations N (default 10, 2 with --tiny), --precision f32|f16 (default both),
//!          --ops-only, --steps-only
//! ```
//!
//! `bench/torch_bench.py` prints the same lines for PyTorch (cuDNN, SDPA, diffusers' models) on
//! the same shapes; `bench/gpu.sh` runs both on the GPU machine.
//!
//! Each timed run ends with an asynchronous read-back of one element, so it measures finished GPU
//! work (plus one tiny slice kernel and its copy); the first run of each case compiles the
//! kernels and is reported apart as `first_ms`. A kernel that does not apply to a case (e.g.
//! burn's flash routine on an adapter without subgroups) is reported with `"ran": false`.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::DType;
use model::Precision;
use model::PrecisionExt;
use model::config::{ControlNetConfig, UNetConfig};
use model::kernels::{
    AttentionKernel, ConvKernel, ConvTiles, Kernels, NormKernel, default_flash_rows as default_rows,
    group_norm_with, try_attention_with, try_conv2d_tiled, try_conv2d_with, try_flash_attention_rows,
};
use model::precision::cast_module;
use model::vae::{AutoencoderKL, VaeConfig};
use model::vocabulary::Named;
use model::{ControlNet, UNet};
use serde_json::json;

struct Options {
    tiny: bool,
    iterations: usize,
    precisions: Vec<Precision>,
    ops: bool,
    steps: bool,
}

fn options() -> Result<Options, String> {
    let mut options =
        Options { tiny: false, iterations: 0, precisions: Precision::ALL.to_vec(), ops: true, steps: true };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tiny" => options.tiny = true,
            "--ops-only" => options.steps = false,
            "--steps-only" => options.ops = false,
            "--iterations" => {
                let value = args.next().ok_or("--iterations needs a number")?;
                options.iterations = value.parse().map_err(|_| format!("not a number: {value}"))?;
            }
            "--precision" => {
                let value = args.next().ok_or("--precision needs f32 or f16")?;
                options.precisions =
                    vec![value.parse().map_err(|e: model::vocabulary::UnknownName| e.to_string())?];
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if options.iterations == 0 {
        options.iterations = if options.tiny { 2 } else { 10 };
    }
    Ok(options)
}

/// Deterministic values in [-amplitude, amplitude).
fn pattern<const D: usize>(shape: [usize; D], seed: u64, amplitude: f32, device: &Device) -> Tensor<D> {
    let n = shape.iter().product::<usize>();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Waits for `tensor` by reading one of its elements back.
fn finish<const D: usize>(tensor: Tensor<D>) {
    let one = tensor.slice(std::array::from_fn::<_, D, _>(|_| 0..1));
    model::block_on(one.into_data_async()).expect("read-back");
}

struct Timing {
    first_ms: f64,
    ms: Vec<f64>,
}

/// Times `run` (which returns `None` where the kernel does not apply) `iterations` times after
/// one warm-up run.
fn time<const D: usize>(iterations: usize, run: impl Fn() -> Option<Tensor<D>>) -> Option<Timing> {
    let started = Instant::now();
    finish(run()?);
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    let ms = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            finish(run().expect("applied once, applies again"));
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    Some(Timing { first_ms, ms })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(op: &str, kernel: &str, precision: Precision, shape: &[usize], flops: f64, timing: Option<Timing>) {
    report_rate(op, kernel, precision, shape, ("tflops", flops / 1e12), timing);
}

/// [`report`] for a memory-bound op: GB/s of `bytes` moved instead of TFLOP/s.
fn report_bytes(
    op: &str,
    kernel: &str,
    precision: Precision,
    shape: &[usize],
    bytes: f64,
    timing: Option<Timing>,
) {
    report_rate(op, kernel, precision, shape, ("gbps", bytes / 1e9), timing);
}

/// One JSON line; `rate`: the name of the rate and the amount per run it divides by the time.
fn report_rate(
    op: &str,
    kernel: &str,
    precision: Precision,
    shape: &[usize],
    (rate, amount): (&str, f64),
    timing: Option<Timing>,
) {
    let line = match timing {
        Some(t) => {
            let ms = median(&t.ms);
            let mut line = json!({
                "op": op, "kernel": kernel, "precision": precision.name(), "shape": shape, "ran": true,
                "ms": ms, "min_ms": t.ms.iter().copied().fold(f64::INFINITY, f64::min),
                "first_ms": t.first_ms, "iterations": t.ms.len(),
            });
            if amount > 0.0 {
                line[rate] = (amount / (ms * 1e-3)).into();
            }
            line
        }
        None => json!({
            "op": op, "kernel": kernel, "precision": precision.name(), "shape": shape, "ran": false,
        }),
    };
    println!("{line}");
}

fn main() {
    let options = options().unwrap_or_else(|e| {
        eprintln!("kernels_bench: {e}");
        std::process::exit(2);
    });
    let device = Device::wgpu_options().init().unwrap_or_else(|e| {
        eprintln!("kernels_bench: no wgpu device: {e}");
        std::process::exit(1);
    });
    println!("{}", json!({ "device": format!("{device:?}"), "tiny": options.tiny }));

    // [batch·heads, queries, keys, head size]: SD1.5 at 512² with CFG (batch 2, 8 heads), self-
    // and cross-attention at each UNet resolution.
    let attention_shapes: &[[usize; 4]] = if options.tiny {
        &[[2, 64, 64, 40], [2, 64, 77, 40], [2, 16, 16, 80]]
    } else {
        &[
            [16, 4096, 4096, 40],
            [16, 4096, 77, 40],
            [16, 1024, 1024, 80],
            [16, 1024, 77, 80],
            [16, 256, 256, 160],
            [16, 64, 64, 160],
        ]
    };

    // [batch, channels, height, width, out channels, kernel size]: the UNet's 3×3 convolutions at
    // each resolution (stride 1, padding 1) and its 1×1 projections, CFG batch.
    let conv_shapes: &[[usize; 6]] = if options.tiny {
        &[[2, 8, 16, 16, 8, 3], [1, 3, 17, 13, 70, 3], [2, 8, 16, 16, 8, 1]]
    } else {
        &[
            [2, 320, 64, 64, 320, 3],
            [2, 640, 32, 32, 640, 3],
            [2, 1280, 16, 16, 1280, 3],
            [2, 320, 64, 64, 320, 1],
            [2, 1280, 16, 16, 1280, 1],
        ]
    };

    // [batch, channels, height, width, groups]: the UNet's norms at each resolution, CFG batch.
    let norm_shapes: &[[usize; 5]] = if options.tiny {
        &[[2, 32, 8, 8, 32], [2, 64, 16, 16, 32]]
    } else {
        &[[2, 320, 64, 64, 32], [2, 640, 32, 32, 32], [2, 1280, 16, 16, 32], [2, 2560, 16, 16, 32]]
    };

    for &precision in &options.precisions {
        if !precision.is_supported_on(&device) {
            println!("{}", json!({ "precision": precision.name(), "supported": false }));
            continue;
        }
        if options.ops {
            ops(&options, &device, precision, attention_shapes, conv_shapes, norm_shapes);
        }
        if options.steps {
            steps(&options, &device, precision);
        }
    }
}

fn ops(
    options: &Options,
    device: &Device,
    precision: Precision,
    attention_shapes: &[[usize; 4]],
    conv_shapes: &[[usize; 6]],
    norm_shapes: &[[usize; 5]],
) {
    let device = device.clone();
    {
        for &[bh, queries, keys, dim] in attention_shapes {
            let dtype = precision.dtype();
            let q = pattern([bh, queries, dim], 1, 2.0, &device).cast(dtype);
            let k = pattern([bh, keys, dim], 2, 2.0, &device).cast(dtype);
            let v = pattern([bh, keys, dim], 3, 1.0, &device).cast(dtype);
            let flops = 4.0 * (bh * queries * keys * dim) as f64;
            let shape = [bh, queries, keys, dim];
            for kernel in AttentionKernel::ALL {
                let timing = time(options.iterations, || try_attention_with(kernel, &q, &k, &v));
                report("attention", kernel.name(), precision, &shape, flops, timing);
            }
            // The other query counts per invocation than the default `flash` uses.
            for rows in [1, 2, 4].into_iter().filter(|&rows| rows != default_rows(dim)) {
                let timing = time(options.iterations, || try_flash_attention_rows(&q, &k, &v, rows));
                report("attention", &format!("flash-r{rows}"), precision, &shape, flops, timing);
            }
        }
        for &[n, c, h, w, o, size] in conv_shapes {
            let dtype = precision.dtype();
            let x = pattern([n, c, h, w], 4, 1.0, &device).cast(dtype);
            let weight = pattern([o, c, size, size], 5, 0.05, &device).cast(dtype);
            let bias = pattern([o], 6, 0.5, &device).cast(dtype);
            let padding = size / 2;
            let flops = 2.0 * (n * o * h * w * c * size * size) as f64;
            let shape = [n, c, h, w, o, size];
            for kernel in ConvKernel::ALL {
                let timing = time(options.iterations, || {
                    try_conv2d_with(kernel, &x, &weight, Some(&bias), 1, padding)
                });
                report("conv2d", kernel.name(), precision, &shape, flops, timing);
            }
            // The other tilings than the default `implicit-gemm` uses.
            for tiles in ConvTiles::ALL.into_iter().filter(|&tiles| tiles != ConvTiles::DEFAULT) {
                let timing = time(options.iterations, || {
                    try_conv2d_tiled(&x, &weight, Some(&bias), 1, padding, tiles)
                });
                let name = format!("implicit-gemm-{}", tiles.name());
                report("conv2d", &name, precision, &shape, flops, timing);
            }
        }
        for &[n, c, h, w, groups] in norm_shapes {
            let mut norm = burn::nn::GroupNormConfig::new(groups, c).init(&device);
            norm = cast_module(norm, precision);
            let x = pattern([n, c, h, w], 7, 1.0, &device).cast(precision.dtype());
            // Bytes read and written once: what a memory-bound kernel is measured against.
            let bytes = 2.0 * (n * c * h * w * DType::from(precision.dtype()).size()) as f64;
            for kernel in NormKernel::ALL {
                let timing =
                    time(options.iterations, || Some(group_norm_with(kernel, &norm, x.clone(), true)));
                report_bytes(
                    "group_norm_silu",
                    kernel.name(),
                    precision,
                    &[n, c, h, w, groups],
                    bytes,
                    timing,
                );
            }
        }
    }
}

/// A whole ControlNet + UNet step with classifier-free guidance (as `controlnet bench-step`
/// runs it) and a VAE decode, with the layers on each kernel set in turn.
fn steps(options: &Options, device: &Device, precision: Precision) {
    let (unet_config, controlnet_config, vae_config, size) = if options.tiny {
        (
            UNetConfig::from_json(include_str!("../../tests/fixtures/tiny/unet/config.json")),
            ControlNetConfig::from_json(include_str!("../../tests/fixtures/tiny/controlnet/config.json")),
            VaeConfig::from_json(include_str!("../../tests/fixtures/tiny/vae/config.json")),
            64,
        )
    } else {
        (Ok(UNetConfig::sd15()), Ok(ControlNetConfig::sd15()), Ok(VaeConfig::sd15()), 512)
    };
    let (unet_config, controlnet_config, vae_config) = (
        unet_config.expect("the UNet config parses"),
        controlnet_config.expect("the ControlNet config parses"),
        vae_config.expect("the VAE config parses"),
    );
    let unet = cast_module(UNet::new(&unet_config, device), precision);
    let controlnet = cast_module(ControlNet::new(&controlnet_config, device), precision);
    let vae = cast_module(AutoencoderKL::new(&vae_config, device), precision);
    let iterations = options.iterations.min(5);
    for kernels in [Kernels::FAST, Kernels::REFERENCE] {
        model::kernels::select(kernels);
        let clock = Instant::now();
        let step =
            model::block_on(model::bench::run_steps(&unet, &controlnet, size, size, 2, iterations, || {
                clock.elapsed().as_secs_f64() * 1e3
            }));
        let mut line = serde_json::to_value(&step).expect("a report serialises");
        line["op"] = "controlnet_unet_step".into();
        line["kernel"] = kernels.name().into();
        line["precision"] = precision.name().into();
        line["ms"] = median(&step.step_ms).into();
        line["shape"] = json!([2, size, size]);
        line["ran"] = true.into();
        println!("{line}");

        // One more step with every op waited for: where the time goes.
        model::kernels::profile::enable(true);
        let profiled = model::block_on(model::bench::run_steps(&unet, &controlnet, size, size, 2, 0, || {
            clock.elapsed().as_secs_f64() * 1e3
        }));
        let classes = model::kernels::profile::take();
        model::kernels::profile::enable(false);
        let in_ops: f64 = classes.values().map(|total| total.ms).sum();
        println!(
            "{}",
            json!({
                "op": "step_profile", "kernel": kernels.name(), "precision": precision.name(),
                "shape": [2, size, size], "total_ms": profiled.first_step_ms,
                "other_ms": profiled.first_step_ms - in_ops, "classes": classes,
            })
        );

        let factor = vae_config.scale_factor();
        let z = pattern([1, vae_config.latent_channels, size / factor, size / factor], 8, 1.0, device);
        let timing = time(iterations, || Some(vae.decode(z.clone())));
        report(
            "vae_decode",
            &kernels.name(),
            precision,
            &[1, vae_config.latent_channels, size, size],
            0.0,
            timing,
        );
    }
    model::kernels::select(Kernels::FAST);
}
