// The installable, offline app, as Chromium itself judges it: the manifest parses and the page is
// installable (CDP `Page.getAppManifest`, `Page.getInstallabilityErrors`); the service worker
// controls the page and its cache holds every file of the build; then with the network cut
// (`context.setOffline`), a reload shows the app, the built-in shapes models load and make an
// image, and the tiny hub model cached earlier loads with no request reaching the hub; last, a
// changed build served afterwards brings "A new version is ready", and Reload runs it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { promisify } from 'node:util';
import { serve } from './server.mjs';
import { hub } from './hub.mjs';
import { launch, screenshot } from './browser.mjs';
import { TIMEOUT_MS, open, until } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const TINY = resolve(ROOT, 'tests', 'fixtures', 'tiny');

let scratch;
let site;
let models;

before(async () => {
  // A copy of the build, so that the test can deploy a changed one.
  scratch = await mkdtemp(join(tmpdir(), 'controlnet-pwa-'));
  await cp(DIST, join(scratch, 'site'), { recursive: true });
  site = await serve(join(scratch, 'site'));
  models = await hub({ repos: { 'test/tiny': TINY } });
});
after(async () => {
  await site?.close();
  await models?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function files(dir, root = dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await files(path, root)));
    else out.push(relative(root, path).split(sep).join('/'));
  }
  return out;
}

/** The service worker's cache: its name and the site-relative paths it holds. */
const cacheContents = (page) =>
  page.evaluate(async () => {
    const names = (await caches.keys()).filter((name) => name.startsWith('controlnet-web-'));
    const paths = [];
    for (const name of names) {
      for (const request of await (await caches.open(name)).keys()) paths.push(new URL(request.url).pathname.slice(1));
    }
    return { names, paths };
  });

/** Fills the models panel (`app.models`) for the tiny pipeline + its ControlNet, cached, and
 *  loads it. */
async function loadTiny(app, page) {
  await app.models.choose(models.url);
  if (!(await page.getByTestId('models-cache').isChecked())) await page.getByTestId('models-cache').check();
  await app.models.load('the tiny models');
}

// Without WebGPU: the page computes on the CPU, where the shapes image takes seconds, not
// SwiftShader's minutes (the WebGPU path is the shapes test's).
test('installable; offline after one visit; a new build prompts and reloads', { timeout: 20 * 60_000 }, async () => {
  const browser = await launch({ webgpu: false });
  const { page, context } = browser;
  await browser.session(async () => {
    const app = await open(page, site.url, { unfold: false });

    // Chromium's own verdicts.
    const cdp = await context.newCDPSession(page);
    const manifest = await cdp.send('Page.getAppManifest');
    assert.deepEqual(manifest.errors, [], 'the manifest parses without errors');
    const parsed = JSON.parse(manifest.data);
    assert.equal(parsed.display, 'standalone');
    assert.ok(parsed.icons.some((icon) => icon.purpose === 'maskable'), 'a maskable icon');

    // The service worker takes control (clients.claim) once it has cached the build.
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: TIMEOUT_MS });
    const installability = await until(
      () => cdp.send('Page.getInstallabilityErrors'),
      (answer) => answer.installabilityErrors.length === 0,
      'no installability errors',
      60_000,
    );
    assert.deepEqual(installability.installabilityErrors, []);
    await until(() => page.getByTestId('offline-status').getAttribute('data-ready'), (r) => r === 'true', 'the offline status');
    const shipped = (await files(join(scratch, 'site'))).filter((file) => file !== 'sw.js').sort();
    const cached = await cacheContents(page);
    assert.equal(cached.names.length, 1, `one build's cache: ${cached.names}`);
    assert.deepEqual(cached.paths.sort(), shipped, 'the cache holds every file of the build');
    const build = cached.names[0];

    // A hub model, cached in IndexedDB while online.
    await app.models.unfold();
    await loadTiny(app, page);
    await screenshot(page, 'pwa-1-online');
    // Back to the built-in models, which the page then loads by itself on the next open.
    await page.getByTestId('models-preset').selectOption('shapes');
    await page.getByTestId('models-load').click();
    await until(
      async () => [await app.models.state(), await page.getByTestId('models-status').textContent()],
      ([state, text]) => state === 'loaded' && /Shapes world/.test(text),
      'the built-in models again',
    );

    // No network at all: the app, its models, an image.
    await context.setOffline(true);
    await page.reload();
    await app.models.loaded('the built-in models offline');
    assert.match(await page.getByTestId('models-status').textContent(), /Shapes world/);
    await app.pad.stroke([[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7], [0.3, 0.3]]);
    await app.generate.run('done', 10 * 60_000);
    await screenshot(page, 'pwa-2-offline');
    await models.reset();
    await app.models.unfold();
    await loadTiny(app, page);
    const requests = Object.values(await models.stats()).reduce((sum, s) => sum + s.requests, 0);
    assert.equal(requests, 0, 'the cached hub model loads offline with no request to the hub');
    await context.setOffline(false);

    // A new build is deployed: a changed page, its service worker's list written again.
    const dir = join(scratch, 'site');
    const html = await readFile(join(dir, 'index.html'), 'utf8');
    await writeFile(join(dir, 'index.html'), html.replace('<head>', '<head>\n    <meta name="build-marker" content="next" />'));
    await cp(resolve(ROOT, 'public', 'sw.js'), join(dir, 'sw.js'));
    await promisify(execFile)('node', [resolve(ROOT, '.ci', 'precache.mjs'), dir]);
    await page.reload();
    await page.getByTestId('update-ready').waitFor({ timeout: TIMEOUT_MS });
    assert.equal(await page.locator('meta[name="build-marker"]').count(), 0, 'the old build runs until Reload');
    await screenshot(page, 'pwa-3-update');
    await page.getByTestId('update-reload').click();
    await page.locator('meta[name="build-marker"]').waitFor({ state: 'attached', timeout: TIMEOUT_MS });
    const after = await until(() => cacheContents(page), (c) => c.names.length === 1 && c.names[0] !== build, 'the old cache deleted');
    console.log(JSON.stringify({ test: 'pwa', files: shipped.length, build, next: after.names[0] }));
  }, { page, failure: 'pwa-failure' });
});
