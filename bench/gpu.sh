#!/usr/bin/env bash
# The GPU machine's benchmark run (the `device` tool), from the repository root:
#
#   run(command="bash bench/gpu.sh", carry=[".gl", ".gpu"], timeout_s=540)
#
# Prepared here beforehand (see README, "Performance"):
#   .gl/   Debian's Vulkan loader and friends (.deb files), as the device tool's README shows
#   .gpu/kernels_bench.gz   `cargo build --release -p model --features kernels --example kernels_bench`, gzipped
#   .gpu/wheels/            optional: the diffusers wheel (and importlib_metadata), for the step
#                           comparison; the machine's Python 3.12 has its other dependencies:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .gpu/wheels diffusers==0.42.1 importlib_metadata
#
# Runs the WGSL benchmark (burn-wgpu on Vulkan, the kernels the browser runs), then PyTorch on the
# same shapes, one after the other, and writes both JSON-line files and the paired table to $OUT.
# Extra arguments go to both benchmarks (e.g. --precision f16, --ops-only).
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
for deb in .gl/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" /; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
date -u +%Y-%m-%dT%H:%MZ > "$OUT/date.txt"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null

bin=$(mktemp -d)/kernels_bench
gunzip -c .gpu/kernels_bench.gz > "$bin" && chmod +x "$bin"
echo "== WGSL (burn-wgpu, Vulkan): $*"
timeout 330 "$bin" "$@" > "$OUT/wgsl.jsonl" 2> "$OUT/wgsl.err"
echo "kernels_bench exit $?"

site=$(mktemp -d)
if [ -d .gpu/wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu/wheels/*.whl \
    > "$OUT/pip.log" 2>&1 && export PYTHONPATH="$site"
fi
echo "== PyTorch: $*"
timeout 150 python3 bench/torch_bench.py "$@" > "$OUT/torch.jsonl" 2> "$OUT/torch.err"
echo "torch_bench exit $?"

python3 bench/compare.py "$OUT/wgsl.jsonl" "$OUT/torch.jsonl" | tee "$OUT/table.md"
