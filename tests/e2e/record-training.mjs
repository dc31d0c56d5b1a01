// Not a test: records the README's figures for training in the tab. Trains a ControlNet in the
// Learn view (headless Chromium, CPU backend: no WebGPU) for STEPS steps, screenshots the view to
// docs/train.png, and prints the tab's steps per second beside the native CLI's for the same run
// (release build, CPU backend, both cores). With WEBGPU=1 the tab trains on WebGPU instead
// (SwiftShader on a machine without a GPU) and the screenshot goes to test-results/ only.
//
//   CONTROLNET_CLI=target/release/controlnet node tests/e2e/record-training.mjs
//   WEBGPU=1 STEPS=30 PROBE_EVERY=1000 node tests/e2e/record-training.mjs
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { serve } from './server.mjs';
import { launch, screenshot } from './browser.mjs';
import { SHAPES, openLearn, until } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const CLI = process.env.CONTROLNET_CLI ?? resolve(ROOT, 'target', 'release', 'controlnet');
const RUN = {
  steps: Number(process.env.STEPS ?? 300),
  batch: Number(process.env.BATCH ?? 4),
  lr: 0.0002,
  seed: 0,
  examples: 8000,
  probeEvery: Number(process.env.PROBE_EVERY ?? 50),
};

const WEBGPU = process.env.WEBGPU === '1';

const site = await serve(DIST);
const scratch = await mkdtemp(join(tmpdir(), 'controlnet-record-'));
const browser = await launch({ webgpu: WEBGPU });
const { page } = browser;
try {
  const app = await openLearn(page, site.url);
  await app.train.configure(RUN);
  const started = Date.now();
  await page.getByTestId('train-start').click();
  const status = () => page.getByTestId('train-status').getAttribute('data-status');
  await until(status, (s) => s === 'finished' || s === 'failed', 'the run', 3 * 3600_000);
  const seconds = (Date.now() - started) / 1000;
  const text = await page.getByTestId('train-status').textContent();
  if (!WEBGPU) await page.getByTestId('train').screenshot({ path: join(ROOT, 'docs', 'train.png') });
  await screenshot(page, 'record-training');

  // The native run: the world's first `examples` pairs in a folder, a few steps for the rate.
  const data = join(scratch, 'data');
  const nativeSteps = Math.min(RUN.steps, 30);
  await promisify(execFile)(CLI, ['world', 'make', '--out', data, '--count', String(RUN.examples), '--seed', String(RUN.seed), '--size', '64', '--condition', 'canny'], { maxBuffer: 1 << 26 });
  const native = await promisify(execFile)(CLI, [
    'train', 'controlnet', '--model', join(SHAPES, 'pipeline'), '--data', data, '--out', join(scratch, 'run'),
    '--steps', String(nativeSteps), '--batch', String(RUN.batch), '--lr', String(RUN.lr), '--seed', String(RUN.seed),
    '--resolution', '64', '--backend', 'cpu', '--checkpoint-every', '100000',
  ], { maxBuffer: 1 << 26 });
  const rate = (native.stderr.match(/([\d.]+) it\/s/g) ?? []).at(-1);
  console.log(JSON.stringify({ run: RUN, webgpu: WEBGPU, tab: text, tabSeconds: seconds, nativeSteps, native: rate }));
} finally {
  await browser.close();
  await site.close();
  await rm(scratch, { recursive: true, force: true });
}
