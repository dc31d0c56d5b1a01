// A size the adapter cannot hold is refused before anything runs, with the buffer named: the page
// checks the largest buffer the loaded models need at the chosen size (the worker's memory
// profile of them) against the adapter's `maxStorageBufferBindingSize`. The adapter here reports
// 8 MiB (its `limits` wrapped before the page reads them, as a small mobile GPU might), so the
// shapes models refuse 1024² and run 64².
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { serve } from './server.mjs';
import { launch } from './browser.mjs';
import { open, set, until } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const BINDING_LIMIT = 8 << 20;

let site;
before(async () => {
  site = await serve(DIST);
});
after(async () => {
  await site?.close();
});

test('a size whose largest buffer exceeds the adapter is refused, naming the buffer', { timeout: 10 * 60_000 }, async () => {
  const browser = await launch({ webgpu: true });
  const { page } = browser;
  await browser.session(async () => {
    await page.addInitScript((limit) => {
      const real = Object.getOwnPropertyDescriptor(GPUAdapter.prototype, 'limits');
      Object.defineProperty(GPUAdapter.prototype, 'limits', {
        get() {
          const limits = real.get.call(this);
          return new Proxy(limits, {
            get: (target, key) => (key === 'maxStorageBufferBindingSize' ? limit : Reflect.get(target, key)),
          });
        },
      });
    }, BINDING_LIMIT);
    const app = await open(page, site.url, { unfold: false });
    await app.pad.stroke([[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7], [0.3, 0.3]]);
    assert.equal(await page.getByTestId('memory-refusal').count(), 0, '64² fits');

    await set(page, 'width', 1024);
    await set(page, 'height', 1024);
    const refusal = await until(
      () => page.getByTestId('memory-refusal').textContent().catch(() => null),
      (text) => text,
      'the refusal',
    );
    console.log(`1024²: ${refusal} (${await page.getByTestId('memory-estimate').textContent()})`);
    assert.match(
      refusal,
      /^The (UNet's feed-forward projection|UNet's last up block|UNet's first resnet|VAE decoder) needs a \d+ MiB buffer, more than this GPU allows \(8\.0 MiB, its maxStorageBufferBindingSize\); try a smaller size\.$/,
    );
    assert.ok(await page.getByTestId('generate').isDisabled(), 'Generate waits for a size that fits');

    // Back to a size that fits: the refusal goes, and the image is made.
    await set(page, 'width', 64);
    await set(page, 'height', 64);
    await until(() => page.getByTestId('memory-refusal').count(), (n) => n === 0, 'the refusal to go');
    await set(page, 'steps', 2);
    await app.generate.run();
  });
});
