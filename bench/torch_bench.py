#!/usr/bin/env python3
"""PyTorch's figures for the shapes of `model/examples/kernels_bench.rs`, as the same JSON lines.

Ops: attention (scaled_dot_product_attention, whichever fused kernel PyTorch picks, and the
"math" one), conv2d (cuDNN), group norm + SiLU; then a whole ControlNet + UNet CFG step and a VAE
decode with diffusers' models (random weights, SD1.5 configs) where diffusers imports. Every line
carries "framework": "torch" and the op/shape/precision keys of the Rust benchmark, so that
`bench/compare.py` can pair them.

    python3 bench/torch_bench.py [--tiny] [--iterations N] [--precision f16|f32] [--ops-only]

Runs on CUDA when there is one, else on the CPU (the tiny sizes are a smoke test there).
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent

ATTENTION = {
    "full": [[16, 4096, 4096, 40], [16, 4096, 77, 40], [16, 1024, 1024, 80], [16, 1024, 77, 80],
             [16, 256, 256, 160], [16, 64, 64, 160]],
    "tiny": [[2, 64, 64, 40], [2, 64, 77, 40], [2, 16, 16, 80]],
}
CONV = {
    "full": [[2, 320, 64, 64, 320, 3], [2, 640, 32, 32, 640, 3], [2, 1280, 16, 16, 1280, 3],
             [2, 320, 64, 64, 320, 1], [2, 1280, 16, 16, 1280, 1]],
    "tiny": [[2, 8, 16, 16, 8, 3], [1, 3, 17, 13, 70, 3], [2, 8, 16, 16, 8, 1]],
}
NORM = {
    "full": [[2, 320, 64, 64, 32], [2, 640, 32, 32, 32], [2, 1280, 16, 16, 32], [2, 2560, 16, 16, 32]],
    "tiny": [[2, 32, 8, 8, 32], [2, 64, 16, 16, 32]],
}
# Stable Diffusion 1.5's vae/config.json (as model/src/vae/config.rs holds it).
SD15_VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def emit(**line):
    print(json.dumps({"framework": "torch", **line}), flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, iterations, run):
    """(first_ms, [ms…]) of `run`, each call waited for."""
    started = time.perf_counter()
    run()
    sync(device)
    first = (time.perf_counter() - started) * 1e3
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        run()
        sync(device)
        times.append((time.perf_counter() - started) * 1e3)
    return first, times


def report(op, kernel, precision, shape, timing, rate=None):
    first, times = timing
    ms = statistics.median(times)
    line = dict(op=op, kernel=kernel, precision=precision, shape=shape, ran=True, ms=ms,
                min_ms=min(times), first_ms=first, iterations=len(times))
    if rate:
        name, amount = rate
        line[name] = amount / (ms * 1e-3)
    emit(**line)


def ops(args, device, dtype, precision, size):
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g) * 2 - 1) * scale).to(device=device, dtype=dtype)

    for bh, nq, nk, d in ATTENTION[size]:
        q, k, v = rand(1, bh, nq, d, scale=2.0), rand(1, bh, nk, d, scale=2.0), rand(1, bh, nk, d)
        flops = 4.0 * bh * nq * nk * d
        report("attention", "sdpa", precision, [bh, nq, nk, d],
               timed(device, args.iterations, lambda: F.scaled_dot_product_attention(q, k, v)),
               ("tflops", flops / 1e12))
        if device.type == "cuda":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def math():
                with sdpa_kernel(SDPBackend.MATH):
                    return F.scaled_dot_product_attention(q, k, v)

            report("attention", "sdpa-math", precision, [bh, nq, nk, d],
                   timed(device, args.iterations, math), ("tflops", flops / 1e12))

    for n, c, h, w, o, k in CONV[size]:
        x, weight, bias = rand(n, c, h, w), rand(o, c, k, k, scale=0.05), rand(o, scale=0.5)
        flops = 2.0 * n * o * h * w * c * k * k
        report("conv2d", "cudnn" if device.type == "cuda" else "torch", precision, [n, c, h, w, o, k],
               timed(device, args.iterations, lambda: F.conv2d(x, weight, bias, padding=k // 2)),
               ("tflops", flops / 1e12))

    for n, c, h, w, groups in NORM[size]:
        x, gamma, beta = rand(n, c, h, w), torch.ones(c, device=device, dtype=dtype), rand(c)
        moved = 2.0 * x.numel() * x.element_size()
        report("group_norm_silu", "torch", precision, [n, c, h, w, groups],
               timed(device, args.iterations, lambda: F.silu(F.group_norm(x, groups, gamma, beta))),
               ("gbps", moved / 1e9))


def steps(args, device, dtype, precision, size):
    try:
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    except Exception as error:  # noqa: BLE001 — any import failure only skips these lines
        emit(op="controlnet_unet_step", kernel="diffusers", precision=precision, ran=False,
             why=f"diffusers does not import: {error!r}")
        return
    if size == "tiny":
        fixtures = ROOT / "tests" / "fixtures" / "tiny"
        load = lambda name: json.loads((fixtures / name / "config.json").read_text())  # noqa: E731
        unet_config, controlnet_config, vae_config, pixels = load("unet"), load("controlnet"), load("vae"), 64
    else:
        fixtures = ROOT / "tests" / "fixtures" / "sd15"
        unet_config = json.loads((fixtures / "unet_config.json").read_text())
        controlnet_config = json.loads((fixtures / "controlnet_config.json").read_text())
        vae_config, pixels = SD15_VAE, 512
    strip = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**strip(unet_config)).to(device=device, dtype=dtype).eval()
    controlnet = ControlNetModel(**strip(controlnet_config)).to(device=device, dtype=dtype).eval()
    vae = AutoencoderKL(**strip(vae_config)).to(device=device, dtype=dtype).eval()
    # The inputs of model::bench::run_steps.
    latent = pixels // 8
    latents = torch.full((2, unet.config.in_channels, latent, latent), 0.5, device=device, dtype=dtype)
    context = torch.full((2, 77, unet.config.cross_attention_dim), 0.1, device=device, dtype=dtype)
    condition = torch.full((2, 3, pixels, pixels), 0.5, device=device, dtype=dtype)
    t = torch.tensor(500.0, device=device)

    def step():
        down, mid = controlnet(latents, t, encoder_hidden_states=context, controlnet_cond=condition,
                               return_dict=False)
        return unet(latents, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid, return_dict=False)[0]

    z = torch.randn(1, vae.config.latent_channels, latent, latent, generator=torch.Generator().manual_seed(8))
    z = z.to(device=device, dtype=dtype)
    iterations = min(args.iterations, 5)
    with torch.no_grad():
        report("controlnet_unet_step", "diffusers", precision, [2, pixels, pixels], timed(device, iterations, step))
        report("vae_decode", "diffusers", precision, [1, vae.config.latent_channels, pixels, pixels],
               timed(device, iterations, lambda: vae.decode(z).sample))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--iterations", type=int, default=0)
    parser.add_argument("--precision", choices=["f16", "f32"], action="append")
    parser.add_argument("--ops-only", action="store_true")
    parser.add_argument("--steps-only", action="store_true")
    args = parser.parse_args()
    args.iterations = args.iterations or (2 if args.tiny else 10)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    emit(device=name, torch=torch.__version__, tiny=args.tiny)
    size = "tiny" if args.tiny else "full"
    for precision in args.precision or ["f32", "f16"]:
        dtype = {"f16": torch.float16, "f32": torch.float32}[precision]
        if device.type == "cpu" and dtype == torch.float16 and not args.tiny:
            emit(precision=precision, supported=False)
            continue
        with torch.no_grad():
            if not args.steps_only:
                ops(args, device, dtype, precision, size)
            if not args.ops_only:
                steps(args, device, dtype, precision, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
