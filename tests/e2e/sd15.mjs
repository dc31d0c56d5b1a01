// Full-size SD1.5 and the Canny ControlNet as the hub publishes them (files, names, layouts), with
// made-up weights generated while they are served: 2.7 GB that never touch the disk. The rule
// is tests/fixtures/make_sd15_random_fixtures.py's (its docstring says it in full); that script
// runs diffusers on the same weights and records each file's SHA-256, which the hub stand-in
// announces, so the page's own whole-file verification proves the two generators agree.
import { gunzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

const FIXTURES = resolve(import.meta.dirname, '..', 'fixtures');
export const FIXTURE = JSON.parse(readFileSync(resolve(FIXTURES, 'sd15_random', 'fixture.json'), 'utf8'));
export const EXPECTED_PNG = resolve(FIXTURES, 'sd15_random', 'expected.png');
export const PIPELINE_REPO = 'stable-diffusion-v1-5/stable-diffusion-v1-5';
export const CONTROLNET_REPO = 'lllyasviel/control_v11p_sd15_canny';

const keyList = (component) => JSON.parse(readFileSync(resolve(FIXTURES, `sd15_${component}_keys.json`), 'utf8'));

function fnv1a(text) {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(text)) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h;
}

function lowbias32(x) {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

function kind(key, shape) {
  if (shape.length === 1) return key.endsWith('bias') ? 'bias' : 'norm';
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  const log2 = 31 - Math.clz32(fanIn);
  return `w${(log2 + 1) >> 1}`;
}

const VAE_OLD_NAMES = [['.to_q.', '.query.'], ['.to_k.', '.key.'], ['.to_v.', '.value.'], ['.to_out.0.', '.proj_attn.']];

function publishedKey(component, key) {
  if (component === 'text_encoder') return `text_model.${key}`;
  if (component === 'vae' && key.includes('.attentions.')) {
    for (const [now, old] of VAE_OLD_NAMES) key = key.replace(now, old);
  }
  return key;
}

/** A generated safetensors file of `component`: { size, sha256, read(start, end) }. */
function weightsFile(component) {
  const entries = Object.entries(keyList(component).tensors).map(([key, shape]) => ({
    name: publishedKey(component, key),
    dtype: 'F16',
    shape,
    seed: fnv1a(`${component}/${key}`),
    table: Uint16Array.from(FIXTURE.tables[kind(key, shape)]),
  }));
  if (component === 'text_encoder') {
    const ids = new BigInt64Array(77).map((_, i) => BigInt(i));
    entries.push({ name: 'text_model.embeddings.position_ids', dtype: 'I64', shape: [1, 77], bytes: Buffer.from(ids.buffer) });
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const entry of entries) {
    const size = entry.shape.reduce((a, b) => a * b, 1) * (entry.dtype === 'F16' ? 2 : 8);
    entry.start = offset;
    entry.end = offset + size;
    header[entry.name] = { dtype: entry.dtype, shape: entry.shape, data_offsets: [entry.start, entry.end] };
    offset = entry.end;
  }
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const head = Buffer.concat([prefix, json]);
  const size = head.length + offset;
  const expected = FIXTURE.files[component];
  if (size !== expected.size) throw new Error(`${component}: ${size} bytes generated, the fixture says ${expected.size}`);

  // Bytes [from, to) of the data section into `out` at `at`.
  function data(from, to, out, at) {
    for (const entry of entries) {
      const a = Math.max(from, entry.start);
      const b = Math.min(to, entry.end);
      if (a >= b) continue;
      if (entry.bytes) {
        entry.bytes.copy(out, at + (a - from), a - entry.start, b - entry.start);
        continue;
      }
      // Whole elements covering [a, b), then the bytes wanted.
      const first = (a - entry.start) >> 1;
      const last = (b - entry.start + 1) >> 1;
      const values = new Uint16Array(last - first);
      const { seed, table } = entry;
      for (let i = first; i < last; i++) values[i - first] = table[lowbias32((i + seed) >>> 0) & 255];
      const bytes = Buffer.from(values.buffer);
      const skip = (a - entry.start) - first * 2;
      bytes.copy(out, at + (a - from), skip, skip + (b - a));
    }
  }
  return {
    size,
    sha256: expected.sha256,
    read: async (start, end) => {
      const out = Buffer.alloc(end - start);
      if (start < head.length) head.copy(out, 0, start, Math.min(end, head.length));
      if (end > head.length) {
        const from = Math.max(start, head.length);
        data(from - head.length, end - head.length, out, from - start);
      }
      return out;
    },
  };
}

const bytesFile = (bytes) => ({ size: bytes.length, read: async (start, end) => bytes.subarray(start, end) });
const jsonFile = (value) => bytesFile(Buffer.from(JSON.stringify(value, null, 2)));
const fixtureFile = (...path) => bytesFile(readFileSync(resolve(FIXTURES, ...path)));

/** The hub stand-in's `generated` repositories: SD1.5 (fp16 files) and the Canny ControlNet. */
export function sd15Repos() {
  return {
    [PIPELINE_REPO]: {
      'model_index.json': fixtureFile('tiny', 'model_index.json'),
      'scheduler/scheduler_config.json': fixtureFile('tiny', 'scheduler', 'scheduler_config.json'),
      'tokenizer/vocab.json': bytesFile(gunzipSync(readFileSync(resolve(FIXTURES, 'clip', 'vocab.json.gz')))),
      'tokenizer/merges.txt': bytesFile(gunzipSync(readFileSync(resolve(FIXTURES, 'clip', 'merges.txt.gz')))),
      'tokenizer/tokenizer_config.json': fixtureFile('tiny', 'tokenizer', 'tokenizer_config.json'),
      'tokenizer/special_tokens_map.json': fixtureFile('tiny', 'tokenizer', 'special_tokens_map.json'),
      'text_encoder/config.json': jsonFile(keyList('text_encoder').config),
      'text_encoder/model.fp16.safetensors': weightsFile('text_encoder'),
      'unet/config.json': jsonFile(keyList('unet').config),
      'unet/diffusion_pytorch_model.fp16.safetensors': weightsFile('unet'),
      'vae/config.json': jsonFile(keyList('vae').config),
      'vae/diffusion_pytorch_model.fp16.safetensors': weightsFile('vae'),
    },
    [CONTROLNET_REPO]: {
      'config.json': jsonFile(keyList('controlnet').config),
      'diffusion_pytorch_model.fp16.safetensors': weightsFile('controlnet'),
    },
  };
}

/** Writes `repos` (as `sd15Repos()` makes them) under `dir` as folders `{owner}/{repo}/…`, in
 *  64 MiB pieces; resolves to the folder of each repository. */
export async function writeRepos(repos, dir) {
  const folders = {};
  for (const [repo, files] of Object.entries(repos)) {
    folders[repo] = join(dir, repo);
    for (const [path, src] of Object.entries(files)) {
      const file = join(folders[repo], path);
      await mkdir(dirname(file), { recursive: true });
      const handle = await open(file, 'w');
      try {
        for (let at = 0; at < src.size; at += 64 << 20) {
          await handle.write(await src.read(at, Math.min(src.size, at + (64 << 20))));
        }
      } finally {
        await handle.close();
      }
    }
  }
  return folders;
}
