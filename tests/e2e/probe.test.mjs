// The foundation, end to end: the built site in headless Chromium finds a WebGPU adapter, shows
// it, and its GPU worker computes (burn-wgpu on WebGPU) what the native build computes on the
// CPU. Without WebGPU, the page explains what to do.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { resolve } from 'node:path';
import { serve } from './server.mjs';
import { launch, screenshot } from './browser.mjs';
import { relativeL2 } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const CLI = process.env.CONTROLNET_CLI ?? resolve(ROOT, 'target', 'debug', 'controlnet');
// Relative L2 error between the browser and the native CPU build.
const TOLERANCE = { f32: 1e-5, f16: 5e-3 };
// SwiftShader is slow, and the first run compiles every shader.
const PROBE_TIMEOUT_MS = 180_000;

let server;
before(async () => {
  server = await serve(DIST);
});
after(async () => {
  await server?.close();
});

async function nativeProbe(precision) {
  const { stdout } = await promisify(execFile)(CLI, ['probe', '--backend', 'cpu', '--precision', precision]);
  return JSON.parse(stdout).outputs;
}

function compare(browser, native, tolerance, label) {
  // Through the model's own ops: on WebGPU the hand-written kernels (implicit-GEMM and 1×1
  // convolutions, fused group norm + SiLU, flash attention), natively on the CPU burn's ops.
  assert.deepEqual(browser.map((o) => o.name), native.map((o) => o.name));
  assert.deepEqual(native.map((o) => o.name), [
    'conv2d', 'conv2d_wide', 'conv1x1', 'group_norm', 'group_norm_silu', 'attention', 'attention_long',
  ]);
  for (let i = 0; i < native.length; i++) {
    assert.deepEqual(browser[i].shape, native[i].shape, `${label} ${native[i].name}: shape`);
    const error = relativeL2(browser[i].values, native[i].values);
    console.log(`${label} ${native[i].name}: relative L2 error vs native ${error.toExponential(2)}`);
    assert.ok(error <= tolerance, `${label} ${native[i].name}: error ${error} > ${tolerance}`);
  }
}

test('the worker computes on WebGPU what the native build computes', { timeout: PROBE_TIMEOUT_MS + 60_000 }, async () => {
  const browser = await launch({ webgpu: true });
  const { page } = browser;
  await browser.session(async () => {
    await page.goto(server.url);
    await page.getByTestId('gpu-status').waitFor({ timeout: 60_000 });
    // The device check is folded away under the generation's panels.
    await page.getByTestId('device-check').evaluate((details) => { details.open = true; });
    const adapter = await page.getByTestId('adapter-name').textContent();
    const maxBuffer = await page.getByTestId('max-buffer-size').textContent();
    const maxBinding = await page.getByTestId('max-storage-binding').textContent();
    const f16Offered = !(await page.getByTestId('shader-f16').textContent()).startsWith('not');
    console.log(`adapter: ${adapter}; max buffer ${maxBuffer}; max storage binding ${maxBinding}; shader-f16 ${f16Offered}`);
    assert.ok(adapter.length > 0);
    assert.match(maxBuffer, /\d+(\.\d)? (MiB|GiB)/);
    assert.match(maxBinding, /\d+(\.\d)? (MiB|GiB)/);

    const precisions = f16Offered ? ['f32', 'f16'] : ['f32'];
    if (!f16Offered) await page.getByTestId('f16-skipped').waitFor();
    for (const precision of precisions) {
      const json = page.getByTestId(`probe-json-${precision}`);
      await Promise.race([
        json.waitFor({ state: 'attached', timeout: PROBE_TIMEOUT_MS }),
        page.getByTestId(`probe-error-${precision}`).waitFor({ timeout: PROBE_TIMEOUT_MS }).then(async () => {
          throw new Error(`probe ${precision} failed: ${await page.getByTestId(`probe-error-${precision}`).textContent()}`);
        }),
      ]);
      const time = await page.getByTestId(`probe-time-${precision}`).textContent();
      console.log(`browser ${precision} probe: ${time}`);
      compare(JSON.parse(await json.textContent()), await nativeProbe(precision), TOLERANCE[precision], precision);
    }
    await page.getByTestId('device-ready').waitFor();
    console.log('screenshot:', await screenshot(page, 'probe-webgpu'));

    // Run again: the f32 result is replaced by a fresh run's, which agrees as well.
    await page.getByTestId('probe-run').click();
    await page.getByTestId('probe-running-f32').waitFor({ timeout: 10_000 }).catch(() => {});
    const again = page.getByTestId('probe-json-f32');
    await again.waitFor({ state: 'attached', timeout: PROBE_TIMEOUT_MS });
    compare(JSON.parse(await again.textContent()), await nativeProbe('f32'), TOLERANCE.f32, 'f32 (again)');
    console.log(`browser f32 probe, second run: ${await page.getByTestId('probe-time-f32').textContent()}`);
  }, { page, failure: 'probe-webgpu-failure' });
});

for (const [name, setup, headline] of [
  ['WebGPU switched off', async () => {}, /no GPU adapter was offered/],
  // An older browser: no navigator.gpu at all.
  ['no navigator.gpu', (page) => page.addInitScript(() => delete Navigator.prototype.gpu), /does not offer WebGPU/],
]) test(`without WebGPU (${name}) the page explains what to do and computes on the CPU`, { timeout: 120_000 }, async () => {
  const browser = await launch({ webgpu: false });
  const { page } = browser;
  await browser.session(async () => {
    await setup(page);
    await page.goto(server.url);
    const explanation = page.getByTestId('no-webgpu');
    await explanation.waitFor({ timeout: 60_000 });
    const text = await explanation.textContent();
    assert.match(text, headline);
    assert.match(text, /chrome:\/\/flags/);
    // And the page goes on, on the CPU.
    assert.match(await page.getByTestId('cpu-backend').textContent(), /run on the CPU/);
    assert.match(await page.getByTestId('adapter-name').textContent(), /CPU/);
    console.log('screenshot:', await screenshot(page, `no-webgpu-${name.replaceAll(/\W+/g, '-')}`));
  });
});
