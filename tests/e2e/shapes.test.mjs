// The page on first open, as a visitor with no network meets it: every request but the site's is
// cut, and still the built-in shapes models load by themselves, the prompt is filled in, a
// scribble drawn on the pad with pointer events steers the image, and the image is the one the
// native CLI makes from the same files, prompt, seed and drawing (PSNR ≥ 40 dB), with the drawn
// shape where it was drawn (IoU). Screenshots of the page go to tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { serve } from './server.mjs';
import { launch, screenshot } from './browser.mjs';
import { SHAPES, open, psnr, set } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const CLI = process.env.CONTROLNET_CLI ?? resolve(ROOT, 'target', 'debug', 'controlnet');
// The shapes repository as the site serves it (web::models::SHAPES).
const MIN_PSNR_DB = 40;
const SEED = 5;
// A square outline, in fractions of the pad: its inside is pixels 19..44 at 64².
const SQUARE = [[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7], [0.3, 0.3]];

let site;
let scratch;

before(async () => {
  site = await serve(DIST);
  scratch = await mkdtemp(join(tmpdir(), 'controlnet-shapes-'));
});
after(async () => {
  await site?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** The drawn square's inside against the image's pixels that differ from its border's colour. */
async function iou(page) {
  return page.getByTestId('result-image').evaluate(async (img) => {
    const bitmap = await createImageBitmap(await (await fetch(img.src)).blob());
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext('2d');
    context.drawImage(bitmap, 0, 0);
    const { data, width, height } = context.getImageData(0, 0, bitmap.width, bitmap.height);
    const at = (x, y) => [0, 1, 2].map((c) => data[(y * width + x) * 4 + c]);
    const border = [];
    for (let i = 0; i < width; i++) border.push(at(i, 0), at(i, height - 1), at(0, i), at(width - 1, i));
    const median = [0, 1, 2].map((c) => border.map((p) => p[c]).sort((a, b) => a - b)[border.length >> 1]);
    let both = 0;
    let either = 0;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const p = at(x, y);
        const shape = Math.hypot(p[0] - median[0], p[1] - median[1], p[2] - median[2]) >= 60;
        const drawn = x >= 0.3 * width && x < 0.7 * width && y >= 0.3 * height && y < 0.7 * height;
        both += shape && drawn;
        either += shape || drawn;
      }
    }
    return { iou: both / Math.max(either, 1), background: median };
  });
}

// With WebGPU (SwiftShader here), and without: the worker then computes on burn's CPU backend
// compiled to WebAssembly, and the image is still the CLI's.
for (const webgpu of [true, false]) test(`first open with no network (${webgpu ? 'WebGPU' : 'no WebGPU: CPU'}): built-in models, a drawn scribble, the native image`, { timeout: 15 * 60_000 }, async () => {
  const name = webgpu ? 'shapes' : 'shapes-cpu';
  const browser = await launch({ webgpu });
  const { page, context } = browser;
  const elsewhere = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(site.url)) return route.continue();
    elsewhere.push(url);
    return route.abort('internetdisconnected');
  });
  await browser.session(async () => {
    await page.setViewportSize({ width: 1280, height: 800 });
    // No click: the models load on their own, from the site.
    const app = await open(page, site.url, { unfold: false });
    assert.match(await page.getByTestId('models-status').textContent(), /Shapes world/);
    assert.equal(await page.getByTestId('models-details').evaluate((d) => d.open), false, 'the other models are folded away');
    const prompt = await page.getByTestId('prompt').inputValue();
    assert.match(prompt, /^a .+ on a .+ background$/, 'a caption of the world is filled in');
    assert.equal(await page.getByTestId('width').inputValue(), '64');
    assert.equal(await page.getByTestId('height').inputValue(), '64');
    assert.equal(await page.getByTestId('cpu-backend').count(), webgpu ? 0 : 1, 'the page says where it computes');
    // The memory estimate is the loaded models' (megabytes), not SD1.5's gigabytes.
    const memory = await page.getByTestId('memory-estimate').textContent();
    assert.match(memory, /^≈ \d+ MB of GPU memory; largest buffer [\d.]+ MiB$/, memory);
    console.log(`shapes ${webgpu ? 'WebGPU' : 'CPU'}: ${memory}`);

    await app.pad.stroke(SQUARE);
    if (await page.getByTestId('seed-random').isChecked()) await page.getByTestId('seed-random').uncheck();
    await set(page, 'seed', SEED);
    await page.getByTestId('scheduler').selectOption('unipc');
    const steps = Number(await page.getByTestId('steps').inputValue());
    // 20 steps of a UNet and a ControlNet on SwiftShader or one CPU thread: seconds each.
    const started = Date.now();
    await app.generate.run('done', 10 * 60_000);
    const seconds = (Date.now() - started) / 1000;
    await screenshot(page, `${name}-1280x800`);
    await page.setViewportSize({ width: 390, height: 844 });
    await screenshot(page, `${name}-390x844`);

    // The control map the page sent: the pad's strokes on black, at the generation's size.
    const map = await page.getByTestId('scribble-canvas').evaluate((pad) => {
      const canvas = document.createElement('canvas');
      canvas.width = pad.width;
      canvas.height = pad.height;
      const context = canvas.getContext('2d');
      context.fillStyle = '#000';
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(pad, 0, 0);
      return canvas.toDataURL('image/png').split(',')[1];
    });
    const mapPath = join(scratch, 'scribble.png');
    await writeFile(mapPath, Buffer.from(map, 'base64'));
    const out = join(scratch, 'native.png');
    await promisify(execFile)(CLI, [
      'generate', '--model', join(SHAPES, 'pipeline'), '--controlnet', join(SHAPES, 'controlnet-scribble'),
      '--control', mapPath, '--prompt', prompt, '--seed', String(SEED), '--steps', String(steps),
      '--scheduler', 'unipc', '--guidance', '7.5', '--width', '64', '--height', '64',
      '--precision', 'f32', '--backend', 'cpu', '--quiet', '--out', out,
    ]);
    const same = await psnr(page, await readFile(out));
    const follows = await iou(page);
    console.log(JSON.stringify({ test: `${name}: first open, drawn scribble`, webgpu, prompt, steps, seconds, ...same, ...follows }));
    assert.ok(same.db >= MIN_PSNR_DB, `the page's image against the CLI's: ${JSON.stringify(same)}`);
    // How far the image follows the drawn square is printed, not asserted: the shipped models do
    // not follow a drawing yet (README, "The shipped models": with the scribble ControlNet at
    // scale 0 the CLI's image for this seed scores higher than at 1), so a bar here would pass or
    // fail on the base model's blobs, not on the ControlNet (v1 passed a 0.5 bar with control off).
    assert.deepEqual(elsewhere, [], 'nothing but the site was asked for');
  }, { page, failure: `${name}-failure` });
});
