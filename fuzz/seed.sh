#!/usr/bin/env bash
# Seeds each fuzz target's corpus from the test fixtures (fuzz/corpus/TARGET, not committed).
set -euo pipefail
cd "$(dirname "$0")"
F=../tests/fixtures
corpus() { mkdir -p "corpus/$1"; }
# Raw safetensors: two bytes choosing the chunk sizes, then a small fixture file.
corpus safetensors
for file in "$F/tiny/text_encoder/model.fp16.safetensors" "$F/tiny/text_encoder_tf4/model.safetensors"; do
  { printf '\x07\x40'; head -c 65000 "$file"; } > "corpus/safetensors/$(basename "$(dirname "$file")")"
done
corpus safetensors_structured
corpus configs
for file in "$F"/tiny/*/config.json "$F"/tiny/*/scheduler_config.json "$F"/tiny/model_index.json; do
  { printf '\x14'; cat "$file"; } > "corpus/configs/$(echo "$file" | tr / _)"
done
corpus tokenizer
{ cat "$F/tiny/tokenizer/vocab.json"; printf '\x01'; cat "$F/tiny/tokenizer/merges.txt"; printf '\x01'
  cat "$F/tiny/tokenizer/tokenizer_config.json"; printf '\x01'; cat "$F/tiny/tokenizer/special_tokens_map.json"
  printf '\x01a photo of a cat'; } > corpus/tokenizer/tiny
corpus images
corpus images_full_size
for file in "$F"/condition/input/*; do
  [ "$(stat -c %s "$file")" -le 65536 ] && cp "$file" corpus/images/ && cp "$file" corpus/images_full_size/
done
corpus parameters
printf 'a cat\nNegative prompt: dog\nSteps: 20, Sampler: UniPC, CFG scale: 7.5, Seed: 7, Size: 512x512, ControlNet 0: "Module: canny, Model: control_canny, Weight: 1"' > corpus/parameters/a1111
corpus npy
cp "$F/tiny/noise_64x64.npy" corpus/npy/
