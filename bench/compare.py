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
        """The time of `kernel`, or of the fastest kernel whose name starts with `kernel-` where
        the benchmark compared variants (tilings, queries per invocation): (ms, name)."""
        kernels = best.get((op, precision, tuple(shape)), ({}, None))[0]
        found = [(t, name) for name, t in kernels.items() if name == kernel or name.startswith(kernel + "-")]
        return min(found) if found else (None, None)

    profiles = [line for line in lines(wgsl_path) if line.get("op") == "step_profile"]
    if profiles:
        print()
        print("| step profile | precision | total ms | classes (ms, count), largest first |")
        print("|---|---|---|---|")
        for p in profiles:
            classes = sorted(p["classes"].items(), key=lambda kv: -kv[1]["ms"])
            parts = [f"{name} {c['ms']:.1f} ({c['count']})" for name, c in classes]
            parts.append(f"other {p['other_ms']:.1f}")
            print(f"| {p['kernel']} | {p['precision']} | {p['total_ms']:.1f} | {', '.join(parts)} |")

    print()
    print("| goal (f16 unless said) | figure | met |")
    print("|---|---|---|")
    goals = []
    for shape in ([2, 320, 64, 64, 320, 3], [2, 640, 32, 32, 640, 3], [2, 1280, 16, 16, 1280, 3]):
        (ours, name), (ref, _) = ms("conv2d", "f16", shape, "implicit-gemm"), ms("conv2d", "f16", shape, "reference")
        if ours and ref:
            goals.append((f"conv 3×3 {shape[:4]} ≥ 20× faster than burn's direct conv",
                          f"{ref / ours:.1f}× ({ref:.2f} → {ours:.3f} ms, {name})", ref / ours >= 20))
    flash, name = ms("attention", "f16", [16, 4096, 4096, 40], "flash")
    if flash:
        goals.append(("attention [16, 4096, 40] ≤ 1 ms", f"{flash:.3f} ms ({name})", flash <= 1.0))
    step, _ = ms("controlnet_unet_step", "f16", [2, 512, 512], "fast")
    vae, _ = ms("vae_decode", "f16", [1, 4, 512, 512], "fast")
    if step:
        goals.append(("ControlNet + UNet CFG step at 512² ≤ 100 ms", f"{step:.1f} ms", step <= 100))
        if vae:
            image = 20 * step + vae
            goals.append(("20-step image ≤ 3 s (20 steps + VAE decode; text encoder not counted)",
                          f"{image / 1e3:.2f} s", image <= 3000))
    for p in profiles:
        if p["kernel"] == "fast" and p["precision"] == "f16" and p["shape"] == [2, 512, 512]:
            # Both kinds of group norm count as one class, as the goal names them.
            merged = {}
            for name, c in p["classes"].items():
                merged_name = "group_norm" if name.startswith("group_norm") else name
                merged[merged_name] = merged.get(merged_name, 0.0) + c["ms"]
            merged["other"] = p["other_ms"]
            ranked = sorted(merged, key=lambda name: -merged[name])
            rank = ranked.index("group_norm") + 1 if "group_norm" in ranked else 0
            goals.append(("group norm (+SiLU) not in the step profile's top three",
                          f"rank {rank} of {len(ranked)} ({merged.get('group_norm', 0):.1f} ms)", rank > 3))
    for goal, figure, met in goals:
        print(f"| {goal} | {figure} | {'yes' if met else 'no'} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
