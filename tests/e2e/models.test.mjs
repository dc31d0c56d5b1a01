// The models panel, as a visitor uses it: loading the tiny fixture pipeline and a ControlNet from a
// stand-in for the Hugging Face Hub (hub.mjs) shows a total progress bar (bytes, rate, time left)
// and one row per file; the cache view then lists the repository with its size and the storage
// estimate; a reload loads from the cache without fetching a weight byte (the weights' bytes in
// chunk files in the origin private file system); deleting the repository from the cache view
// removes its chunk files and makes the next load download again; and with a storage quota too small for
// the weights, the page says so, loads them uncached, and still generates. Last, a diffusers folder
// picked from the disk is imported into the cache and loads with no request to any server (after an
// import the GPU worker died in, which ends with the reason and imports again after Restart). The hub
// behaves as the real one does (weights through a cross-origin redirect, their SHA-256 in its JSON
// API): every file is verified; a hub that names no SHA-256 gets its weights marked unverified.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { serve } from './server.mjs';
import { hub } from './hub.mjs';
import { launch, screenshot } from './browser.mjs';
import { TIMEOUT_MS, cacheFiles, open, set, until } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const TINY = resolve(ROOT, 'tests', 'fixtures', 'tiny');
const UNET = 'test/tiny/unet/diffusion_pytorch_model.safetensors';

let site;
let models;

before(async () => {
  site = await serve(DIST);
  models = await hub({ repos: { 'test/tiny': TINY } });
});
after(async () => {
  await models?.close();
  await site?.close();
});

/** Bytes the hub sent for files of test/tiny that end in `.safetensors`. */
async function weightBytes() {
  const stats = await models.stats();
  return Object.entries(stats)
    .filter(([file]) => file.endsWith('.safetensors'))
    .reduce((sum, [, s]) => sum + s.bytes, 0);
}

test('progress, cache view, reload from cache, delete, quota', { timeout: 15 * 60_000 }, async () => {
  const unetSize = (await readFile(resolve(TINY, 'unet', 'diffusion_pytorch_model.safetensors'))).length;
  const browser = await launch({ webgpu: true });
  const { page, context } = browser;
  await browser.session(async () => {
    const app = await open(page, site.url);
    await app.models.choose(models.url);
    await models.reset();
    // The UNet's weights arrive slowly enough (~4 s) to watch the progress while they do.
    await models.fault(UNET, 'slow', { bps: Math.round(unetSize / 4) });
    await page.getByTestId('models-load').click();

    // While loading: one row per file, and a total with a rate and the time left.
    const row = page.locator(`[data-testid="models-file"][data-file="${UNET}"]`);
    await row.waitFor({ timeout: TIMEOUT_MS });
    const total = page.getByTestId('models-progress-total');
    const during = await until(
      () => total.textContent(),
      (text) => /\/s/.test(text) && /left/.test(text),
      'a rate and a time left',
    );
    await screenshot(page, 'models-1-loading');
    await app.models.loaded('the first load');
    for (const file of ['test/tiny/model_index.json', 'test/tiny/text_encoder/model.safetensors', 'test/tiny/controlnet/diffusion_pytorch_model.safetensors']) {
      assert.equal(await page.locator(`[data-testid="models-file"][data-file="${file}"]`).count(), 1, file);
    }
    const max = Number(await total.getAttribute('max'));
    assert.ok(max > unetSize, `the total (${max} B) counts every file`);
    assert.equal(Number(await total.getAttribute('value')), max, 'the total reached its end');
    const fetched = await weightBytes();
    assert.ok(fetched > unetSize, `the first load downloaded the weights (${fetched} B)`);
    // The hub answers as the real one does: the weights through a 302 to another origin, their
    // SHA-256 only on the redirect (hidden from fetch) and in its JSON API, which the page reads:
    // every file was checked, none is reported unverified.
    assert.equal(await page.getByTestId('models-file-unverified').count(), 0, 'every weights file verified');
    console.log(JSON.stringify({ test: 'first load', during, fetched }));

    // The cache view lists the repository, its size, and the storage estimate.
    const cached = page.locator('[data-testid="cache-model"][data-repo="test/tiny"]');
    await cached.waitFor({ timeout: TIMEOUT_MS });
    assert.match(await cached.textContent(), /\d(\.\d+)? ?(KB|MB|kB|KiB|MiB)/);
    assert.match(await page.getByTestId('storage-estimate').textContent(), /\d/);
    await screenshot(page, 'models-2-cached');

    // A reload: the same choice is remembered, and the load fetches no weight byte.
    await page.reload();
    await page.getByTestId('models-load').waitFor({ timeout: TIMEOUT_MS });
    assert.equal(await page.getByTestId('models-pipeline').inputValue(), 'test/tiny');
    await models.reset();
    await app.models.load();
    assert.equal(await weightBytes(), 0, 'a reload loads from the cache');
    // The weights' bytes are in the origin private file system, one file per weights file.
    const files = await cacheFiles(page);
    assert.ok(files.reduce((sum, f) => sum + f.size, 0) > unetSize, `the chunk files: ${JSON.stringify(files)}`);

    // Delete the repository from the cache: it leaves the list, its chunk files are removed, and
    // the next load downloads.
    await cached.getByTestId('cache-delete').click();
    await until(() => cached.count(), (n) => n === 0, 'the repository to leave the cache view');
    const left = await cacheFiles(page);
    const removed = files.filter((f) => !left.some((l) => l.path === f.path));
    assert.ok(removed.reduce((sum, f) => sum + f.size, 0) > unetSize, `the repository's chunk files are removed: ${JSON.stringify(left)}`);
    assert.ok(left.every((l) => files.some((f) => f.path === l.path)), 'no file appeared');
    await models.reset();
    await app.models.load();
    assert.ok((await weightBytes()) > unetSize, 'after a delete, the weights are downloaded again');
  }, { page, failure: 'models-failure' });

  // A quota too small: a clear message, the weights load uncached, and generation still works.
  const small = await launch({ webgpu: true });
  await small.session(async () => {
    const cdp = await small.context.newCDPSession(small.page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: site.url.replace(/\/$/, ''), quotaSize: 64 << 10 });
    const { page } = small;
    const app = await open(page, site.url);
    await app.models.choose(models.url);
    await app.models.load();
    const warning = await page.getByTestId('models-cache-warning').textContent();
    assert.match(warning, /MiB needed|MB needed|needed/, warning);
    await screenshot(page, 'models-3-quota');

    await set(page, 'prompt', 'a lighthouse');
    await set(page, 'steps', 1);
    await set(page, 'width', 64);
    await set(page, 'height', 64);
    // No condition image: the unit is switched off, and the pipeline runs without ControlNet.
    await app.unit(0).root.getByTestId('unit-enabled').uncheck();
    await page.getByTestId('generate').click();
    const state = await until(
      () => app.generate.state(),
      (s) => s === 'done' || s === 'error',
      'a generation without a cache',
    );
    assert.equal(state, 'done', await page.getByTestId('generate-error').textContent().catch(() => ''));
  }, { page: small.page, failure: 'models-quota-failure' });

  // A hub that names no SHA-256 (no `lfs` in its API, no `X-Linked-Etag`): the weights still load,
  // and the page says which files could not be verified.
  const unhashed = await hub({ repos: { 'test/tiny': TINY }, hashes: false });
  const plain = await launch({ webgpu: true });
  await plain.session(async () => {
    const { page } = plain;
    const app = await open(page, site.url);
    await app.models.choose(unhashed.url);
    await app.models.load();
    const flagged = await page
      .locator('[data-testid="models-file"]:has([data-testid="models-file-unverified"])')
      .evaluateAll((rows) => rows.map((row) => row.dataset.file));
    const weights = ['text_encoder/model', 'unet/diffusion_pytorch_model', 'vae/diffusion_pytorch_model', 'controlnet/diffusion_pytorch_model'];
    assert.deepEqual(flagged.sort(), weights.map((w) => `test/tiny/${w}.safetensors`).sort(), 'the weights, and only they, are unverified');
    await screenshot(page, 'models-4-unverified');
  }, { page: plain.page, failure: 'models-unverified-failure' }).finally(() => unhashed.close());

  // A local folder: imported into the cache, then loaded without the network.
  const local = await launch({ webgpu: true });
  await local.session(async () => {
    const { page } = local;
    const app = await open(page, site.url);
    // The GPU worker dies during the import (an uncaught error, what a panic in the wasm is, on
    // its first write of the import): the import ends with the reason, the picker works again,
    // and after Restart the same folder imports.
    for (const worker of page.workers()) {
      // The GPU workers (the generator's and the device check's, which writes nothing).
      if ((await worker.evaluate(() => self.name)) !== 'worker') continue;
      await worker.evaluate(() => {
        const put = IDBObjectStore.prototype.put;
        IDBObjectStore.prototype.put = function (...args) {
          IDBObjectStore.prototype.put = put;
          setTimeout(() => {
            throw new Error('the test stopped the worker mid-import');
          });
          return put.apply(this, args);
        };
      });
    }
    await page.getByTestId('import-folder').setInputFiles(TINY);
    const failed = await page.getByTestId('import-error').textContent({ timeout: TIMEOUT_MS });
    console.log(`import when the worker dies: ${failed}`);
    assert.match(failed, /^The GPU worker stopped during the import \(.*the test stopped the worker mid-import.*\); restart it and import again\.$/);
    assert.ok(await page.getByTestId('import-folder').isEnabled(), 'the picker works again');
    await screenshot(page, 'models-5-import-stopped');
    await page.getByTestId('gpu-restart').click();
    await until(() => app.models.state(), (s) => s === 'loaded', 'the restart');
    await page.getByTestId('import-folder').setInputFiles(TINY);
    await page.getByTestId('import-done').waitFor({ timeout: TIMEOUT_MS });
    assert.equal(await page.getByTestId('models-pipeline').inputValue(), 'local/tiny');
    await page.locator('[data-testid="cache-model"][data-repo="local/tiny"]').waitFor({ timeout: TIMEOUT_MS });
    await set(page, 'models-controlnets', 'local/tiny:controlnet');
    await models.reset();
    await app.models.load();
    const stats = await models.stats();
    assert.deepEqual(Object.keys(stats), [], `an imported folder loads without the network: ${JSON.stringify(stats)}`);
    await screenshot(page, 'models-6-imported');
  }, { page: local.page, failure: 'models-import-failure' });
});
