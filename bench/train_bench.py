#!/usr/bin/env python3
"""ControlNet training steps per second: burn (this project's `controlnet bench-train`) beside
PyTorch doing the same step on the same machine, in the same run.

    python3 bench/train_bench.py --cli target/release/controlnet [--backends cpu,wgpu]
        [--configs tiny,5m] [--latent 16] [--batch 16] [--iterations 5] [--threads 2]

The step is the recipe's (`model::train`; diffusers' `train_controlnet.py`): `ControlNetModel
.from_unet`, the UNet frozen, forward through both, MSE on ε, backward, `clip_grad_norm_(1.0)`,
AdamW (lr 1e-5). Random inputs: latents and ε `[B, 4, L, L]`, a text context `[B, 77, D]` (the
text encoder and the VAE are outside the timed step, as the recipe encodes them without
gradients), conditions `[B, 3, 8L, 8L]`. Configs: `tiny` (tests/fixtures/tiny/unet) and `5m`
(bench/unet_5m.json: a 5.5 M-parameter UNet, a 2.7 M-parameter ControlNet).

Prints one JSON line per measurement (both frameworks' lines carry "kind": "controlnet_train_step")
and then a table: steps per second, burn / torch, peak resident memory.
"""

import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = {"tiny": ROOT / "tests/fixtures/tiny/unet/config.json", "5m": ROOT / "bench/unet_5m.json"}


def torch_steps(config_path, latent, batch, iterations):
    from diffusers import ControlNetModel, UNet2DConditionModel

    config = {k: v for k, v in json.loads(config_path.read_text()).items() if not k.startswith("_")}
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    controlnet = ControlNetModel.from_unet(unet)
    unet.requires_grad_(False)
    controlnet.train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-5, weight_decay=1e-2, eps=1e-8)
    cross = config["cross_attention_dim"]
    latents = torch.randn(batch, 4, latent, latent)
    noise = torch.randn(batch, 4, latent, latent)
    context = torch.randn(batch, 77, cross)
    condition = torch.rand(batch, 3, 8 * latent, 8 * latent)
    timesteps = torch.tensor([i * 997 % 1000 for i in range(batch)])
    times = []
    for _ in range(iterations + 1):
        started = time.perf_counter()
        down, mid = controlnet(latents, timesteps, encoder_hidden_states=context, controlnet_cond=condition,
                               return_dict=False)
        pred = unet(latents, timesteps, encoder_hidden_states=context, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append((time.perf_counter() - started) * 1e3)
    step_ms = times[1:]
    return {
        "kind": "controlnet_train_step", "framework": "torch", "backend": "cpu", "latent": latent,
        "batch": batch, "trainable_parameters": sum(p.numel() for p in controlnet.parameters()),
        "first_step_ms": times[0], "step_ms": step_ms, "steps_per_second": 1e3 / statistics.mean(step_ms),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli", required=True)
    parser.add_argument("--backends", default="cpu")
    parser.add_argument("--configs", default="tiny,5m")
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.configs.split(","):
        # PyTorch in a child process, so that its peak memory is its own.
        code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import json, torch; "
                f"torch.set_num_threads({args.threads}); from train_bench import torch_steps, CONFIGS; "
                f"print(json.dumps(torch_steps(CONFIGS[{name!r}], {args.latent}, {args.batch}, {args.iterations})))")
        theirs = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                           text=True).stdout.strip().splitlines()[-1])
        theirs["config"] = name
        print(json.dumps(theirs), flush=True)
        for backend in args.backends.split(","):
            out = subprocess.run(
                [args.cli, "bench-train", "--backend", backend, "--unet-config", str(CONFIGS[name]), "--latent",
                 str(args.latent), "--batch", str(args.batch), "--iterations", str(args.iterations)],
                check=True, capture_output=True, text=True, env={"RAYON_NUM_THREADS": str(args.threads),
                                                                  **__import__("os").environ},
            )
            ours = json.loads(out.stdout.strip().splitlines()[-1])
            ours["config"] = name
            print(json.dumps(ours), flush=True)
            rows.append((name, backend, ours, theirs))
    print(f"\n| config | trainable params | latent × batch | burn backend | burn steps/s | torch (CPU) steps/s "
          f"| burn / torch | burn peak RSS | torch peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, backend, ours, theirs in rows:
        ratio = ours["steps_per_second"] / theirs["steps_per_second"]
        mib = lambda b: f"{b / 2**20:.0f} MiB" if b else "?"  # noqa: E731
        print(f"| {name} | {ours['trainable_parameters']:,} | {args.latent}² × {args.batch} | {backend} "
              f"| {ours['steps_per_second']:.3f} | {theirs['steps_per_second']:.3f} | {ratio:.2f} "
              f"| {mib(ours['peak_rss_bytes'])} | {mib(theirs['peak_rss_bytes'])} |")


if __name__ == "__main__":
    main()
