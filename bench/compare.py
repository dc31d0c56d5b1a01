#!/usr/bin/env python3
"""Pairs the JSON lines of kernels_bench (WGSL) and torch_bench.py (PyTorch) into one Markdown table.

    python3 bench/compare.py WGSL.jsonl TORCH.jsonl

One row per (op, precision, shape): each WGSL kernel's time, PyTorch's best time, and the ratio
of the fastest WGSL kernel to it. Then the issue's goals, each with the figure that decides it
and whether it is met. Only the standard library: it runs on the GPU machine as is.
"""

import json
import sys


def lines(path):
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    pass


def key(line):
    return (line["op"], line["precision"], tuple(line.get("shape") or ()))


def main(wgsl_path, torch_path):
    wgsl, torch = {}, {}
    header = []
    for line in lines(wgsl_path):
        if "device" in line:
            header.append(f"WGSL: {line['device']}")
        if line.get("op") and line.get("ran"):
            wgsl.setdefault(key(line), {})[line["kernel"]] = line["ms"]
    for line in lines(torch_path):
        if "device" in line:
            header.append(f"PyTorch {line.get('torch', '')}: {line['device']}")
        if line.get("op") and line.get("ran"):
            torch.setdefault(key(line), {})[line["kernel"]] = line["ms"]

    print("\n".join(f"- {h}" for h in header))
    print()
    print("| op | precision | shape | WGSL kernels (ms) | PyTorch (ms) | fastest WGSL / PyTorch |")
    print("|---|---|---|---|---|---|")
    best = {}
    for k in sorted(wgsl, key=lambda k: (k[1], k[0], k[2])):
        kernels = wgsl[k]
        fastest = min(kernels.values())
        best[k] = (kernels, fastest)
        theirs = torch.get(k, {})
        reference = min(theirs.values()) if theirs else None
        ratio = f"{fastest / reference:.1f}×" if reference else "–"
        mine = ", ".join(f"{name} {ms:.3f}" for name, ms in sorted(kernels.items(), key=lambda kv: kv[1]))
        ours = ", ".join(f"{name} {ms:.3f}" for name, ms in sorted(theirs.items(), key=lambda kv: kv[1])) or "–"
        shape = "×".join(str(s) for s in k[2])
        print(f"| {k[0]} | {k[1]} | {shape} | {mine} | {ours} | {ratio} |")

    def ms(op, precision, shape, kernel):
        return best.get((op, precision, tuple(shape)), ({}, None))[0].get(kernel)

    print()
    print("| goal (f16 unless said) | figure | met |")
    print("|---|---|---|")
    goals = []
    for shape in ([2, 320, 64, 64, 320, 3], [2, 640, 32, 32, 640, 3], [2, 1280, 16, 16, 1280, 3]):
        ours, ref = ms("conv2d", "f16", shape, "implicit-gemm"), ms("conv2d", "f16", shape, "reference")
        if ours and ref:
            goals.append((f"conv 3×3 {shape[:4]} ≥ 20× faster than burn's direct conv",
                          f"{ref / ours:.1f}× ({ref:.2f} → {ours:.3f} ms)", ref / ours >= 20))
    flash = ms("attention", "f16", [16, 4096, 4096, 40], "flash")
    if flash:
        goals.append(("attention [16, 4096, 40] ≤ 1 ms", f"{flash:.3f} ms", flash <= 1.0))
    step = ms("controlnet_unet_step", "f16", [2, 512, 512], "fast")
    vae = ms("vae_decode", "f16", [1, 4, 512, 512], "fast")
    if step:
        goals.append(("ControlNet + UNet CFG step at 512² ≤ 100 ms", f"{step:.1f} ms", step <= 100))
        if vae:
            image = 20 * step + vae
            goals.append(("20-step image ≤ 3 s (20 steps + VAE decode; text encoder not counted)",
                          f"{image / 1e3:.2f} s", image <= 3000))
    for goal, figure, met in goals:
        print(f"| {goal} | {figure} | {'yes' if met else 'no'} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
