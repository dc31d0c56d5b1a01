// Generate in the tab, end to end, as a visitor does it: load the tiny fixture pipeline and its two
// ControlNets from a stand-in for the Hugging Face Hub (hub.mjs), type a prompt, drop a condition
// image, generate 2 steps at 64×64, and get the image the native pipeline makes for the same seed
// and settings (`controlnet generate` on the CPU backend); the same ControlNet kept as one file in
// the original format (A1111's and ComfyUI's) makes the same image. Then: Cancel stops a long run midway and
// the next run succeeds; two control units steer one image together (again equal to the CLI's);
// the GPU device destroyed mid-generation is reported and recovered from by a restart that reloads
// the models; the gallery and the prompt survive a reload; the gallery's download is a PNG whose `parameters`
// text chunk carries the settings. A screenshot of each state goes to tests/artifacts/, and the
// time per step in Chromium (SwiftShader) is printed as one JSON line.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { serve } from './server.mjs';
import { hub } from './hub.mjs';
import { ARTIFACTS, launch, screenshot } from './browser.mjs';
import { TIMEOUT_MS, open, psnr, set, until } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const CLI = process.env.CONTROLNET_CLI ?? resolve(ROOT, 'target', 'debug', 'controlnet');
const TINY = resolve(ROOT, 'tests', 'fixtures', 'tiny');
const EDGES = resolve(TINY, 'control', 'edges_64x64.png');
const SCRIBBLE = resolve(TINY, 'control', 'scribble_64x64.png');
// tiny/controlnet's weights in the original single-file format (make_published_fixtures.py).
const SINGLE_FILE = 'control_v11p_sd15_tiny.safetensors';
// The bar: the browser's image and the native one agree to 40 dB PSNR (8-bit).
const MIN_PSNR_DB = 40;

const SETTINGS = {
  prompt: 'a red house by a lake, watercolour',
  negative: 'blurry, low quality',
  seed: 1234,
  steps: 2,
  guidance: 7.5,
  scheduler: 'unipc',
  size: 64,
};

let site;
let models;
let scratch;

before(async () => {
  site = await serve(DIST);
  models = await hub({ repos: { 'test/tiny': TINY } });
  scratch = await mkdtemp(join(tmpdir(), 'controlnet-generate-'));
});
after(async () => {
  await models?.close();
  await site?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** The native pipeline's image for SETTINGS with `units` ([[controlnet dir, image]…]), as PNG bytes. */
async function native(name, units) {
  const out = join(scratch, `${name}.png`);
  const args = [
    'generate', '--model', TINY, '--prompt', SETTINGS.prompt, '--negative-prompt', SETTINGS.negative,
    '--steps', String(SETTINGS.steps), '--guidance', String(SETTINGS.guidance), '--scheduler', SETTINGS.scheduler,
    '--seed', String(SETTINGS.seed), '--width', String(SETTINGS.size), '--height', String(SETTINGS.size),
    '--precision', 'f32', '--backend', 'cpu', '--quiet', '--out', out,
  ];
  for (const [dir, image] of units) args.push('--controlnet', resolve(TINY, dir), '--control', image);
  await promisify(execFile)(CLI, args);
  return readFile(out);
}

/** A PNG's tEXt chunks, by keyword. */
function pngText(bytes) {
  const texts = {};
  let at = 8;
  while (at + 8 <= bytes.length) {
    const length = bytes.readUInt32BE(at);
    const type = bytes.toString('latin1', at + 4, at + 8);
    if (type === 'tEXt') {
      const data = bytes.subarray(at + 8, at + 8 + length);
      const nul = data.indexOf(0);
      texts[data.toString('latin1', 0, nul)] = data.toString('latin1', nul + 1);
    }
    at += 12 + length;
  }
  return texts;
}

/** Saves a picture of the page from the top of the first element to the bottom of the last. */
async function shot(page, [first, last], name) {
  // In the document's coordinates, which a full-page clip uses (a bounding box is the viewport's).
  const box = (testid) =>
    page.getByTestId(testid).evaluate((element) => {
      const rect = element.getBoundingClientRect();
      return { x: rect.x + window.scrollX, y: rect.y + window.scrollY, width: rect.width, height: rect.height };
    });
  const top = await box(first);
  const bottom = await box(last);
  const y = top.y - 8;
  const height = bottom.y + bottom.height + 8 - y;
  const width = Math.max(top.x + top.width, bottom.x + bottom.width) + 8;
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true, clip: { x: 0, y, width, height } });
}

test('load, generate, cancel, two units, gallery across a reload', { timeout: 15 * 60_000 }, async () => {
  const [oneUnit, twoUnits] = [
    await native('one-unit', [['controlnet', EDGES]]),
    await native('two-units', [['controlnet', EDGES], ['controlnet2', SCRIBBLE]]),
  ];
  const browser = await launch({ webgpu: true });
  const { page } = browser;
  await browser.session(async () => {
    const app = await open(page, site.url);

    // Models: the tiny pipeline and both ControlNets, from the test hub.
    // The third: the first one as A1111 and ComfyUI keep it, one file in the original format.
    await app.models.choose(models.url, {
      controlnets: `test/tiny:controlnet\ntest/tiny:controlnet2\ntest/tiny:${SINGLE_FILE}`,
    });
    await app.models.load('the models to load');
    await screenshot(page, 'generate-1-models-loaded');

    // Prompt and settings.
    await app.generate.type(SETTINGS);
    await set(page, 'preview-every', 1);

    // The first unit: the edge map as it is (no preprocessor, no resizing at 64×64).
    const first = app.unit(0);
    await first.useMap(await readFile(EDGES), 'edges.png');
    await screenshot(page, 'generate-2-ready');

    // One unit: progress arrives step by step, and the image is the native one.
    const steps = await app.generate.run();
    assert.ok(steps.includes(1) && steps.includes(2), `progress showed steps ${JSON.stringify(steps)}`);
    const one = await psnr(page, oneUnit);
    console.log(JSON.stringify({ test: 'one unit vs native', ...one }));
    assert.ok(one.db >= MIN_PSNR_DB, `one unit: ${JSON.stringify(one)}`);
    const stepMs = Number(await page.getByTestId('result-image').getAttribute('data-step-ms'));
    await screenshot(page, 'generate-3-result');

    // Cancel: a 60-step run stops within a step of the click, and the next run succeeds.
    await set(page, 'steps', 60);
    await page.getByTestId('generate').click();
    await until(() => page.getByTestId('generate-progress').getAttribute('data-step'), (s) => Number(s) >= 2, 'step 2');
    await screenshot(page, 'generate-4-running');
    const clicked = Number(await page.getByTestId('generate-progress').getAttribute('data-step'));
    await page.getByTestId('cancel').click();
    await until(() => app.generate.state(), (s) => s === 'cancelled', 'the cancellation');
    const stopped = Number(await page.getByTestId('generate-progress').getAttribute('data-step'));
    assert.ok(stopped <= clicked + 2 && stopped < 60, `cancelled at step ${stopped}, clicked at ${clicked}`);
    await screenshot(page, 'generate-5-cancelled');
    await set(page, 'steps', SETTINGS.steps);
    await app.generate.run();
    assert.ok((await psnr(page, oneUnit)).db >= MIN_PSNR_DB, 'the run after a cancel is the native image');
    // The shaders are compiled by now: this is the step time a second image costs.
    const warmStepMs = Number(await page.getByTestId('result-image').getAttribute('data-step-ms'));

    // The single-file ControlNet (the third loaded) makes the first one's image.
    const options = await first.root.getByTestId('unit-controlnet').locator('option').allTextContents();
    assert.ok(options[2]?.includes(SINGLE_FILE), `the unit offers the single file: ${JSON.stringify(options)}`);
    await first.root.getByTestId('unit-controlnet').selectOption({ index: 2 });
    await app.generate.run();
    const single = await psnr(page, oneUnit);
    console.log(JSON.stringify({ test: 'single-file ControlNet vs native folder', ...single }));
    assert.ok(single.db >= MIN_PSNR_DB, `single file: ${JSON.stringify(single)}`);
    await first.root.getByTestId('unit-controlnet').selectOption({ index: 0 });

    // Two units together: the second ControlNet with a scribble.
    await page.getByTestId('add-unit').click();
    await app.unit(1).useMap(await readFile(SCRIBBLE), 'scribble.png', 1);
    await app.generate.run();
    const two = await psnr(page, twoUnits);
    console.log(JSON.stringify({ test: 'two units vs native', ...two }));
    assert.ok(two.db >= MIN_PSNR_DB, `two units: ${JSON.stringify(two)}`);
    assert.ok((await psnr(page, oneUnit)).db < two.db, 'the second unit changed the image');
    await screenshot(page, 'generate-6-two-units');
    // For the README: the units, the settings and the result, as one picture (the image decoded).
    await page.getByTestId('result-image').evaluate((img) => img.decode());
    await shot(page, ['control-units', 'result'], 'generate-readme');

    // The GPU device really lost mid-generation (what a driver reset or a GPU unplugged does): the
    // worker's GPUDevice, found through the calls it makes, is destroyed while a run is going. The
    // page says so, a restart reloads the models, nothing typed is lost, and the next run gives
    // the same image.
    const gpuWorkers = [];
    for (const worker of page.workers()) {
      // The GPU workers (the generator's and the device check's), by the name the page gives them.
      if ((await worker.evaluate(() => self.name)) === 'worker') gpuWorkers.push(worker);
    }
    for (const worker of gpuWorkers) {
      await worker.evaluate(() => {
        self.gpuDevices = new Set();
        for (const method of ['createCommandEncoder', 'createBindGroup']) {
          const original = GPUDevice.prototype[method];
          GPUDevice.prototype[method] = function (...args) {
            self.gpuDevices.add(this);
            return original.apply(this, args);
          };
        }
      });
    }
    await set(page, 'steps', 50);
    await page.getByTestId('generate').click();
    await until(() => page.getByTestId('generate-progress').getAttribute('data-step'), (s) => Number(s) >= 1, 'a first step');
    let destroyed = 0;
    for (const worker of gpuWorkers) {
      destroyed += await worker.evaluate(() => {
        for (const device of self.gpuDevices) device.destroy();
        return self.gpuDevices.size;
      });
    }
    assert.ok(destroyed >= 1, "the generator's device was found and destroyed");
    assert.equal(await until(() => app.generate.state(), (s) => s !== 'running', 'the run to end'), 'error');
    await page.getByTestId('gpu-failure').waitFor({ timeout: TIMEOUT_MS });
    await screenshot(page, 'generate-7-crashed');
    const lost = await page.getByTestId('gpu-failure').textContent();
    console.log(`device destroyed mid-run, at step ${await page.getByTestId('generate-progress').getAttribute('data-step')}: ${lost}`);
    assert.match(lost, /The GPU worker stopped: the GPU device was lost \(/);
    await page.getByTestId('gpu-restart').click();
    await until(() => app.models.state(), (s) => s === 'loaded', 'the reload');
    assert.equal(await page.getByTestId('prompt').inputValue(), SETTINGS.prompt);
    await set(page, 'steps', SETTINGS.steps);
    await app.generate.run();
    assert.ok((await psnr(page, twoUnits)).db >= MIN_PSNR_DB, 'after a restart, the same image');

    // The gallery: five images, newest first; the download carries the parameters.
    const items = page.getByTestId('gallery-item');
    await until(() => items.count(), (n) => n === 5, 'five gallery items');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      items.nth(0).getByTestId('gallery-download').click(),
    ]);
    const png = await readFile(await download.path());
    const parameters = pngText(png).parameters ?? '';
    for (const part of [
      SETTINGS.prompt,
      `Negative prompt: ${SETTINGS.negative}`,
      `Steps: ${SETTINGS.steps}`,
      `Seed: ${SETTINGS.seed}`,
      `Size: ${SETTINGS.size}x${SETTINGS.size}`,
      // A1111's names: its sampler names, and each unit's own quoted pairs.
      'Sampler: UniPC',
      'ControlNet 0: "Module: none, Model: test/tiny/controlnet, Weight: 1, Resize Mode: Just Resize',
      'ControlNet 1: "Module: none, Model: test/tiny/controlnet2, Weight: 1, Resize Mode: Just Resize',
      'Control Mode: Balanced"',
    ]) {
      assert.ok(parameters.includes(part), `the PNG's parameters lack ${JSON.stringify(part)}: ${parameters}`);
    }

    // A reload: the gallery and the prompt are still there.
    await page.reload();
    await until(() => page.getByTestId('gallery-item').count(), (n) => n === 5, 'the gallery after a reload');
    assert.equal(await page.getByTestId('prompt').inputValue(), SETTINGS.prompt);
    assert.equal(await page.getByTestId('steps').inputValue(), String(SETTINGS.steps));
    await screenshot(page, 'generate-8-reloaded');

    // "Use these parameters again" reads the PNG's parameters text back: the prompt, the settings
    // and every unit, whatever was changed since.
    await set(page, 'prompt', 'something else');
    await set(page, 'steps', 7);
    await page.getByTestId('scheduler').selectOption('ddim');
    const unit2 = page.getByTestId('control-unit').nth(1);
    await unit2.getByTestId('unit-weight').evaluate((input) => {
      input.value = '0.3';
      input.dispatchEvent(new Event('input', { bubbles: true }));
    });
    await unit2.getByTestId('unit-mode').selectOption('controlnet');
    await unit2.getByTestId('unit-guess').check();
    await page.getByTestId('gallery-item').nth(0).getByTestId('gallery-reuse').click();
    assert.equal(await page.getByTestId('prompt').inputValue(), SETTINGS.prompt);
    assert.equal(await page.getByTestId('negative-prompt').inputValue(), SETTINGS.negative);
    assert.equal(await page.getByTestId('steps').inputValue(), String(SETTINGS.steps));
    assert.equal(await page.getByTestId('seed').inputValue(), String(SETTINGS.seed));
    assert.equal(await page.getByTestId('scheduler').inputValue(), SETTINGS.scheduler);
    assert.equal(await page.getByTestId('control-unit').count(), 2);
    assert.equal(await unit2.getByTestId('unit-weight').inputValue(), '1');
    assert.equal(await unit2.getByTestId('unit-mode').inputValue(), 'balanced');
    assert.equal(await unit2.getByTestId('unit-guess').isChecked(), false);
    assert.equal(await unit2.getByTestId('preprocessor').inputValue(), 'none');
    assert.equal(await unit2.getByTestId('resize-mode').inputValue(), 'just');

    console.log(
      JSON.stringify({
        bench: 'chromium (SwiftShader) tiny pipeline, one ControlNet, CFG',
        size: `${SETTINGS.size}x${SETTINGS.size}`,
        first_run_step_ms: stepMs,
        step_ms: warmStepMs,
      }),
    );
  }, { page, failure: 'generate-failure' });
});
