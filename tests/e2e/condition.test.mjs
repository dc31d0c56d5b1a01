// The condition image, end to end: a photo dropped on the page (a real drop event) becomes a
// Canny edge map in the preprocessing worker, the thresholds move it live, the scribble pad draws,
// undoes and redoes strokes, and a file that is no image is refused without losing the preview.
// Also a benchmark: Canny on a 2048×2048 photo in the worker, printed as one JSON line.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { serve } from './server.mjs';
import { launch, screenshot } from './browser.mjs';
import { open as openPage, panels, set, until } from './page.mjs';

/** Drops a file on the condition panel's drop zone. */
const drop = (page, bytes, name, type) => panels(page).unit(0).drop(bytes, name, type);
/** A stroke from one point to another (fractions of the scribble pad). */
const stroke = (page, from, to) => panels(page).pad.stroke([from, to], 12);

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const INPUTS = resolve(ROOT, 'tests', 'fixtures', 'condition', 'input');
// SwiftShader's GPU worker shares the 2 cores with the preprocessing worker; be patient.
const TIMEOUT_MS = 60_000;

let server;
before(async () => {
  server = await serve(DIST);
});
after(async () => {
  await server?.close();
});

/** Opens the page and waits for the built-in models (whose load sets the size) and the
 *  condition panel. */
async function open() {
  const browser = await launch({ webgpu: true });
  await openPage(browser.page, server.url);
  await browser.page.getByTestId('condition-panel').waitFor({ timeout: TIMEOUT_MS });
  // Stable Diffusion's size: the maps here are photos' (the built-in models chose 64²).
  await set(browser.page, 'width', 512);
  await set(browser.page, 'height', 512);
  return browser;
}

/** Pastes a file as Ctrl+V would, with the file on the clipboard. */
async function paste(page, bytes, name, type) {
  await page.evaluate(
    ({ base64, name, type }) => {
      const data = new DataTransfer();
      data.items.add(new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name, { type }));
      document.body.dispatchEvent(new ClipboardEvent('paste', { bubbles: true, cancelable: true, clipboardData: data }));
    },
    { base64: Buffer.from(bytes).toString('base64'), name, type },
  );
}

/** Counts a canvas's white, black and painted pixels, and hashes them. */
async function pixels(page, testid) {
  return page.getByTestId(testid).evaluate((canvas) => {
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let white = 0;
    let black = 0;
    let painted = 0;
    let hash = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 0) painted++;
      if (a === 255 && r === 255 && g === 255 && b === 255) white++;
      if (a === 255 && r === 0 && g === 0 && b === 0) black++;
      hash = (Math.imul(hash, 31) + r + 7 * g + 13 * b + 17 * a) | 0;
    }
    return { width: canvas.width, height: canvas.height, total: data.length / 4, white, black, painted, hash };
  });
}

const previewId = (page) => page.getByTestId('preview-time').getAttribute('data-id');

/**
 * Waits for a preview newer than `after` (an id from `previewId`) that answers the latest
 * settings (two quick changes give two previews; the first must not be taken for the second),
 * and returns its pixels.
 */
async function nextPreview(page, after, what) {
  const time = page.getByTestId('preview-time');
  await until(
    async () => [await time.getAttribute('data-id'), await time.getAttribute('data-current')],
    ([id, current]) => id !== null && id !== after && current === 'true',
    what,
  );
  return pixels(page, 'condition-preview');
}

/** A PNG header claiming `width × height`: a decompression bomb's first bytes. */
function pngHeader(width, height) {
  const table = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (bytes) => {
    let c = 0xffffffff;
    for (const byte of bytes) c = table[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, body) => {
    const typed = Buffer.concat([Buffer.from(type, 'ascii'), body]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(body.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typed));
    return Buffer.concat([length, typed, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr)]);
}

test('a dropped photo becomes a live Canny map; the pad draws, undoes and redoes; bad files are refused', { timeout: 240_000 }, async () => {
  const browser = await open();
  const { page } = browser;
  await browser.session(async () => {
    const photo = await readFile(resolve(INPUTS, 'astronaut.png'));
    // Before any image the map is black at the chosen size, ready to draw on.
    const blank = await until(() => pixels(page, 'condition-preview'), (p) => p.black === p.total && p.total > 0, 'a black map');
    assert.deepEqual([blank.width, blank.height], [512, 512]);

    // 1. Drop the photo: a Canny map at 100/200, mostly black with white edges.
    await drop(page, photo, 'astronaut.png', 'image/png');
    const edges = await nextPreview(page, null, 'the first Canny preview');
    assert.match(await page.getByTestId('condition-source').textContent(), /astronaut\.png · 512×512/);
    assert.equal(await page.getByTestId('preview-time').getAttribute('data-op'), 'canny');
    assert.deepEqual([edges.width, edges.height], [512, 512]);
    assert.equal(edges.white + edges.black, edges.total, 'a binary map');
    const share = edges.white / edges.total;
    console.log(`Canny 100/200: ${(100 * share).toFixed(2)}% edge pixels; ${await page.getByTestId('preview-time').textContent()}`);
    assert.ok(share > 0.01 && share < 0.3, `edge share ${share}`);
    console.log('screenshot:', await screenshot(page, 'condition-canny'));

    // 2. Lower thresholds: more edges, at once.
    let id = await previewId(page);
    await page.getByTestId('canny-low').fill('30');
    await page.getByTestId('canny-high').fill('60');
    const lower = await nextPreview(page, id, 'the 30/60 preview');
    assert.ok(lower.white > edges.white, 'lower thresholds give more edges');
    assert.equal(await page.getByTestId('canny-low-value').textContent(), '30');
    console.log(`Canny 30/60: ${((100 * lower.white) / lower.total).toFixed(2)}% edge pixels`);
    assert.notEqual(lower.hash, edges.hash);

    // Invert: white background, black edges.
    id = await previewId(page);
    await page.getByTestId('invert').check();
    const inverted = await nextPreview(page, id, 'the inverted preview');
    assert.equal(inverted.black, lower.white, 'inverting swaps black and white');
    id = await previewId(page);
    await page.getByTestId('invert').uncheck();
    await nextPreview(page, id, 'the preview, not inverted');

    // 3. Scribble: the photo as line art, and strokes drawn over it with the mouse.
    id = await previewId(page);
    await page.getByTestId('preprocessor').selectOption('scribble');
    await nextPreview(page, id, 'the scribble preview');
    assert.equal(await page.getByTestId('preview-time').getAttribute('data-op'), 'scribble');
    assert.equal((await pixels(page, 'scribble-canvas')).painted, 0, 'nothing drawn yet');
    assert.ok(await page.getByTestId('scribble-undo').isDisabled());
    await stroke(page, [0.2, 0.2], [0.8, 0.6]);
    const drawn = await pixels(page, 'scribble-canvas');
    console.log(`one stroke: ${drawn.white} white pixels`);
    assert.ok(drawn.white > 500, `a stroke of ${drawn.white} white pixels`);
    console.log('screenshot:', await screenshot(page, 'condition-scribble'));

    await page.getByTestId('scribble-undo').click();
    assert.equal((await pixels(page, 'scribble-canvas')).painted, 0, 'undo empties the pad');
    await page.getByTestId('scribble-redo').click();
    assert.equal((await pixels(page, 'scribble-canvas')).white, drawn.white, 'redo brings the stroke back');

    // A thicker eraser across the stroke removes part of it; undo restores it.
    await page.getByTestId('brush-size').fill('40');
    await page.getByTestId('eraser').click();
    assert.equal(await page.getByTestId('eraser').getAttribute('aria-pressed'), 'true');
    await stroke(page, [0.5, 0.1], [0.5, 0.9]);
    const erased = await pixels(page, 'scribble-canvas');
    assert.ok(erased.white < drawn.white && erased.white > 0, `erased to ${erased.white} of ${drawn.white}`);
    await page.keyboard.press('Control+z');
    assert.equal((await pixels(page, 'scribble-canvas')).white, drawn.white, 'Ctrl+Z undoes the eraser');
    await page.getByTestId('eraser').click();

    // Clear, and undo the clear.
    await page.getByTestId('scribble-clear').click();
    assert.equal((await pixels(page, 'scribble-canvas')).painted, 0, 'clear empties the pad');
    await page.getByTestId('scribble-undo').click();
    assert.equal((await pixels(page, 'scribble-canvas')).white, drawn.white, 'undo brings back what was cleared');

    // 4. Files that are no image: a message, and everything else stays.
    const before = await pixels(page, 'condition-preview');
    const source = await page.getByTestId('condition-source').textContent();
    const refused = [
      [Buffer.from('hello, this is not an image\n'), 'notes.txt', 'text/plain'],
      [photo.subarray(0, 2000), 'truncated.png', 'image/png'],
      [pngHeader(60_000, 60_000), 'bomb.png', 'image/png'],
    ];
    for (const [bytes, name, type] of refused) {
      await drop(page, bytes, name, type);
      const error = page.getByTestId('condition-error');
      await until(async () => (await error.count()) && (await error.textContent()), (text) => text && text.includes(name), `the error for ${name}`);
      console.log(`${name}: ${await error.textContent()}`);
      assert.equal(await page.getByTestId('condition-source').textContent(), source, 'the source stays');
      assert.equal((await pixels(page, 'condition-preview')).hash, before.hash, 'the preview stays');
    }
    console.log('screenshot:', await screenshot(page, 'condition-error'));

    // The page still works: a slider move in Canny recomputes from the kept photo.
    id = await previewId(page);
    await page.getByTestId('preprocessor').selectOption('canny');
    const recomputed = await nextPreview(page, id, 'a preview after the refused files');
    assert.equal(recomputed.white, lower.white, 'the same photo and thresholds give the same map');

    // 5. Paste line art (Ctrl+V with a file on the clipboard), then pick the photo with the picker.
    const lineart = await readFile(resolve(INPUTS, 'lineart.png'));
    id = await previewId(page);
    await paste(page, lineart, 'lineart.png', 'image/png');
    await until(() => page.getByTestId('condition-source').textContent(), (text) => text.startsWith('lineart.png'), 'the pasted source');
    assert.equal(await page.getByTestId('condition-error').count(), 0, 'a good file clears the error');
    await nextPreview(page, id, 'the preview of the pasted image');
    await page.getByTestId('condition-file').setInputFiles({ name: 'picked.png', mimeType: 'image/png', buffer: photo });
    await until(() => page.getByTestId('condition-source').textContent(), (text) => text.startsWith('picked.png'), 'the picked source');

    // 6. Size and fit: a 768×512 map, resized in the worker.
    id = await previewId(page);
    await page.getByTestId('resize-mode').selectOption('fill');
    await page.getByTestId('width').fill('765');
    await page.getByTestId('width').blur();
    await until(() => page.getByTestId('width').inputValue(), (value) => value === '768', 'the width snapped to 768');
    const wide = await until(() => pixels(page, 'condition-preview'), (p) => p.width === 768, 'a 768-wide preview');
    assert.equal(wide.height, 512);
    assert.deepEqual(
      await page.getByTestId('scribble-canvas').evaluate((canvas) => [canvas.width, canvas.height]),
      [768, 512],
      'the pad follows the size',
    );
    assert.equal((await pixels(page, 'scribble-canvas')).white > 0, true, 'the drawing survives the resize');
    console.log('screenshot:', await screenshot(page, 'condition-resized'));
  }, { page, failure: 'condition-failure' });
});

test('benchmark: Canny on a 2048×2048 photo in the preprocessing worker', { timeout: 300_000 }, async () => {
  const browser = await open();
  const { page } = browser;
  await browser.session(async () => {
    // Let the GPU worker's probe finish first: it shares the CPU (SwiftShader) with this.
    await Promise.race([
      page.getByTestId('probe-json-f32').waitFor({ state: 'attached', timeout: 180_000 }),
      page.getByTestId('probe-error-f32').waitFor({ state: 'attached', timeout: 180_000 }),
    ]);
    for (const side of ['width', 'height']) {
      await page.getByTestId(side).fill('2048');
      await page.getByTestId(side).blur();
    }
    await until(() => pixels(page, 'condition-preview'), (p) => p.width === 2048 && p.height === 2048, 'a 2048² blank map');

    // The photo, upscaled to 2048×2048 in the page and encoded as a JPEG: a phone-sized file.
    const photo = await readFile(resolve(INPUTS, 'astronaut.png'));
    const big = await page.evaluate(async (base64) => {
      const bitmap = await createImageBitmap(new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))]));
      const canvas = new OffscreenCanvas(2048, 2048);
      const context = canvas.getContext('2d');
      context.imageSmoothingQuality = 'high';
      context.drawImage(bitmap, 0, 0, 2048, 2048);
      const blob = await canvas.convertToBlob({ type: 'image/jpeg', quality: 0.92 });
      const bytes = new Uint8Array(await blob.arrayBuffer());
      let binary = '';
      for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return btoa(binary);
    }, photo.toString('base64'));
    const jpeg = Buffer.from(big, 'base64');

    const runs = [];
    const record = async () => {
      const time = page.getByTestId('preview-time');
      runs.push({
        op_ms: Number(await time.getAttribute('data-op-ms')),
        elapsed_ms: Number(await time.getAttribute('data-elapsed-ms')),
      });
    };
    const dropped = Date.now();
    await drop(page, jpeg, 'astronaut-2048.jpg', 'image/jpeg');
    const first = await nextPreview(page, null, 'the 2048² Canny map');
    const roundTrip = Date.now() - dropped;
    assert.deepEqual([first.width, first.height], [2048, 2048]);
    assert.ok(first.white > 0 && first.white < first.total / 3, `${first.white} edge pixels`);
    const source = await page.getByTestId('condition-source').textContent();
    assert.match(source, /2048×2048/);
    await record();

    // Threshold changes: the decoded, resized photo is kept; only Canny runs again.
    for (const low of ['90', '80', '70']) {
      const id = await previewId(page);
      await page.getByTestId('canny-low').fill(low);
      await nextPreview(page, id, `the map at low ${low}`);
      await record();
    }
    const ops = runs.map((run) => run.op_ms).sort((a, b) => a - b);
    const decodeMs = Number(source.match(/decoded in (\d+) ms/)?.[1]);
    console.log(
      JSON.stringify({
        bench: 'canny_in_preprocess_worker',
        width: 2048,
        height: 2048,
        jpeg_bytes: jpeg.length,
        decode_ms: decodeMs,
        drop_to_preview_ms: roundTrip,
        canny_ms: runs.map((run) => Number(run.op_ms.toFixed(1))),
        canny_median_ms: Number(((ops[1] + ops[2]) / 2).toFixed(1)),
        worker_total_ms: runs.map((run) => Number(run.elapsed_ms.toFixed(1))),
      }),
    );
    console.log('screenshot:', await screenshot(page, 'condition-bench-2048'));
  }, { page, failure: 'condition-bench-failure' });
});
