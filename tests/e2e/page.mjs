// What the e2e tests do to the page, as a visitor would: wait for it, type, draw, generate, and
// compare its result with an image made natively.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

// SwiftShader computes on the 2 CPU cores that also run everything else.
export const TIMEOUT_MS = 180_000;

// The shapes models in the source tree, at the revision `vocabulary::shapes::REVISION` names
// (read from there: one source of truth for the tests and the crates).
export const SHAPES = (() => {
  const root = resolve(import.meta.dirname, '..', '..');
  const source = readFileSync(resolve(root, 'vocabulary', 'src', 'shapes.rs'), 'utf8');
  const revision = source.match(/pub const REVISION: &str = "([^"]+)";/)?.[1];
  assert.ok(revision, 'vocabulary/src/shapes.rs names the shapes models\' REVISION');
  return resolve(root, 'public', 'hub', 'controlnet-web', 'shapes', 'resolve', revision);
})();

// The weights cache's names, read from web/src/cache.rs: its IndexedDB database (and OPFS folder),
// and its chunk records' and manifests' stores.
export const CACHE = (() => {
  const source = readFileSync(resolve(import.meta.dirname, '..', '..', 'web', 'src', 'cache.rs'), 'utf8');
  const constant = (name) => {
    const value = source.match(new RegExp(`pub const ${name}: &str = "([^"]+)";`))?.[1];
    assert.ok(value, `web/src/cache.rs names ${name}`);
    return value;
  };
  return { database: constant('DATABASE'), chunks: constant('CHUNKS'), files: constant('FILES') };
})();

/** The weights cache's chunk files in `page`'s origin private file system: `{ path, size }` each. */
export function cacheFiles(page) {
  return page.evaluate(async (database) => {
    const found = [];
    let folder;
    try {
      folder = await (await navigator.storage.getDirectory()).getDirectoryHandle(database);
    } catch {
      return found;
    }
    for await (const [repo, handle] of folder.entries()) {
      for await (const [name, entry] of handle.entries()) found.push({ path: `${repo}/${name}`, size: (await entry.getFile()).size });
    }
    return found.sort((a, b) => a.path.localeCompare(b.path));
  }, CACHE.database);
}

/** Polls `read` until `ok` holds of its value; returns the value. */
export async function until(read, ok, what, timeout = TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  let value;
  while (Date.now() < deadline) {
    value = await read();
    if (ok(value)) return value;
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error(`timed out waiting for ${what}; last value: ${JSON.stringify(value)}`);
}

/** PSNR in dB between the page's result image and a PNG (decoded by the browser, exactly). */
export async function psnr(page, png) {
  const ours = await page.getByTestId('result-image').evaluate(async (img) => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(''));
  });
  return pngPsnr(page, Buffer.from(ours, 'base64'), png);
}

/** PSNR in dB between two PNGs (RGB), decoded by the page's browser. */
export async function pngPsnr(page, a, b) {
  return page.evaluate(
    async ([a, b]) => {
      const decode = async (base64) => {
        const bitmap = await createImageBitmap(new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))]));
        const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
        const context = canvas.getContext('2d');
        context.drawImage(bitmap, 0, 0);
        return context.getImageData(0, 0, bitmap.width, bitmap.height);
      };
      const [ours, theirs] = [await decode(a), await decode(b)];
      if (ours.width !== theirs.width || ours.height !== theirs.height) {
        return { error: `${ours.width}×${ours.height} vs ${theirs.width}×${theirs.height}` };
      }
      let sum = 0;
      let n = 0;
      for (let i = 0; i < ours.data.length; i += 4) {
        for (let c = 0; c < 3; c++) {
          sum += (ours.data[i + c] - theirs.data[i + c]) ** 2;
          n++;
        }
      }
      const mse = sum / n;
      return { db: mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse), mse, width: ours.width };
    },
    [Buffer.from(a).toString('base64'), Buffer.from(b).toString('base64')],
  );
}

/** Drops a file on `zone` (a locator) as a browser would: dragenter, dragover, drop, with a
 *  DataTransfer holding it. */
export async function drop(zone, bytes, name, type = 'image/png') {
  await zone.evaluate(
    (zone, { base64, name, type }) => {
      const data = new DataTransfer();
      data.items.add(new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name, { type }));
      for (const kind of ['dragenter', 'dragover', 'drop']) {
        zone.dispatchEvent(new DragEvent(kind, { bubbles: true, cancelable: true, dataTransfer: data }));
      }
    },
    { base64: Buffer.from(bytes).toString('base64'), name, type },
  );
}

/** Sets an input's value as typing would. */
export async function set(page, testid, value) {
  await page.getByTestId(testid).fill(String(value));
  await page.getByTestId(testid).dispatchEvent('change');
}


/** Relative L2 error of `actual` against `expected` (equal lengths asserted). */
export function relativeL2(actual, expected) {
  assert.equal(actual.length, expected.length);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < actual.length; i++) {
    diff += (actual[i] - expected[i]) ** 2;
    norm += expected[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}

// Page objects: one per panel, with what a visitor does there. `open` gives them all.

/** The models panel: the built-in models, the custom fields, Load, the cache. */
export class ModelsPanel {
  constructor(page) {
    this.page = page;
  }

  state() {
    return this.page.getByTestId('models-status').getAttribute('data-state');
  }

  /** Waits for the load under way to end, and asserts it loaded (else fails with the panel's
   *  error). */
  async loaded(what = 'the models', timeout = TIMEOUT_MS) {
    const end = await until(() => this.state(), (s) => s === 'loaded' || s === 'error', what, timeout);
    assert.equal(end, 'loaded', await this.page.getByTestId('models-error').textContent().catch(() => ''));
  }

  /** Clicks Load and waits for the models to be loaded. */
  async load(what, timeout) {
    await this.page.getByTestId('models-load').click();
    await this.loaded(what, timeout);
  }

  /** Opens the folded part (other models, import, cache) if it is closed. */
  async unfold() {
    const details = this.page.getByTestId('models-details');
    if (!(await details.evaluate((d) => d.open))) await this.page.getByTestId('models-summary').click();
  }

  /** Fills the (unfolded) panel's custom fields: a pipeline and ControlNets (by default the
   *  pipeline's `controlnet` folder), served by the hub stand-in at `hubUrl`, and a variant. */
  async choose(hubUrl, { pipeline = 'test/tiny', controlnets = `${pipeline}:controlnet`, variant = 'none' } = {}) {
    await this.page.getByTestId('models-preset').selectOption('custom');
    await set(this.page, 'models-base-url', hubUrl);
    await set(this.page, 'models-pipeline', pipeline);
    await set(this.page, 'models-controlnets', controlnets);
    await this.page.getByTestId('models-variant').selectOption(variant);
  }
}

/** The generate panel: settings, Generate, the run's progress and result. */
export class GeneratePanel {
  constructor(page) {
    this.page = page;
  }

  state() {
    return this.page.getByTestId('generate-progress').getAttribute('data-state');
  }

  /** Clicks Generate and waits for the run to end in `want`; returns the steps the page
   *  reported. */
  async run(want = 'done', timeout = TIMEOUT_MS) {
    const { page } = this;
    // Record every step the progress shows, however fast they come.
    await page.getByTestId('generate-progress').evaluate((element) => {
      window.__steps = [];
      new MutationObserver(() => window.__steps.push(Number(element.getAttribute('data-step')))).observe(element, {
        attributes: true,
        attributeFilter: ['data-step'],
      });
    });
    const before = await page.getByTestId('result-image').getAttribute('src').catch(() => null);
    await page.getByTestId('generate').click();
    await until(() => this.state(), (s) => s === 'running', 'the run to start');
    const end = await until(() => this.state(), (s) => s !== 'running', 'the run to end', timeout);
    assert.equal(end, want, `the run ended ${end}: ${await page.getByTestId('generate-error').textContent().catch(() => '')}`);
    if (want === 'done') {
      await until(() => page.getByTestId('result-image').getAttribute('src'), (src) => src && src !== before, 'a new image');
    }
    return page.evaluate(() => window.__steps);
  }

  /** Types a generation's settings as a visitor would: `{ prompt, negative, seed, steps,
   *  guidance, scheduler, size }` (a fixed seed, a square size). */
  async type(settings) {
    const { page } = this;
    await set(page, 'prompt', settings.prompt);
    await set(page, 'negative-prompt', settings.negative);
    if (await page.getByTestId('seed-random').isChecked()) await page.getByTestId('seed-random').uncheck();
    await set(page, 'seed', settings.seed);
    await set(page, 'steps', settings.steps);
    await set(page, 'guidance', settings.guidance);
    await page.getByTestId('scheduler').selectOption(settings.scheduler);
    await set(page, 'width', settings.size);
    await set(page, 'height', settings.size);
  }
}

/** One control unit of the condition panel. */
export class ControlUnit {
  /** `root`: the unit's locator (`control-unit`). */
  constructor(root) {
    this.root = root;
  }

  /** Drops a file on the unit's drop zone. */
  drop(bytes, name, type) {
    return drop(this.root.getByTestId('condition-drop'), bytes, name, type);
  }

  /** Gives the unit an image as its map as it is (no preprocessor, no resizing at its own size),
   *  waits for the map, and picks the loaded ControlNet at `controlnet`. */
  async useMap(bytes, name, controlnet = 0) {
    await this.root.getByTestId('preprocessor').selectOption('none');
    await this.root.getByTestId('resize-mode').selectOption('just');
    await this.drop(bytes, name);
    await until(() => this.root.getByTestId('preview-time').getAttribute('data-id'), (id) => id !== null, `the map of ${name}`);
    await this.root.getByTestId('unit-controlnet').selectOption({ index: controlnet });
  }
}

/** The scribble pad of the first unit. */
export class ScribblePad {
  constructor(page) {
    this.page = page;
    this.canvas = page.getByTestId('scribble-canvas');
  }

  /** Draws a stroke with the mouse through `points` (fractions of the canvas): pointer events,
   *  as a hand on the pad makes them, `steps` moves between two points. */
  async stroke(points, steps = 8) {
    await this.canvas.scrollIntoViewIfNeeded();
    const box = await this.canvas.boundingBox();
    const at = ([x, y]) => [box.x + x * box.width, box.y + y * box.height];
    await this.page.mouse.move(...at(points[0]));
    await this.page.mouse.down();
    for (const point of points.slice(1)) await this.page.mouse.move(...at(point), { steps });
    await this.page.mouse.up();
  }
}

/** The Learn view's training panel. */
export class TrainPanel {
  constructor(page) {
    this.page = page;
  }

  /** Goes to the Learn view. */
  show() {
    return this.page.getByTestId('nav-learn').click();
  }

  /** The training settings, as a visitor types them (the "More" part unfolded). */
  async configure({ steps, batch, lr, seed, examples, probeEvery, init = 'zero' }) {
    const { page } = this;
    await page.getByTestId('train-init').selectOption(init);
    await set(page, 'train-steps', steps);
    await set(page, 'train-batch', batch);
    await set(page, 'train-lr', lr);
    const more = page.locator('[data-testid="train"] details');
    if (!(await more.evaluate((d) => d.open))) await more.locator('summary').click();
    await set(page, 'train-seed', seed);
    await set(page, 'train-examples', examples);
    await set(page, 'train-probe-every', probeEvery);
  }
}

/** The page's panels, as page objects. */
export function panels(page) {
  return {
    models: new ModelsPanel(page),
    generate: new GeneratePanel(page),
    unit: (n) => new ControlUnit(page.getByTestId('control-unit').nth(n)),
    pad: new ScribblePad(page),
    train: new TrainPanel(page),
  };
}

/** Opens the page and waits for what it loads by itself (the built-in shapes models); then
 *  unfolds the models panel (for tests that choose other models) unless `unfold` is false.
 *  Returns the page's panels. */
export async function open(page, url, { unfold = true } = {}) {
  await page.goto(url);
  const app = panels(page);
  await app.models.loaded('the built-in models');
  if (unfold) await app.models.unfold();
  return app;
}

/** Opens the page at 1280×900, waits for the built-in models, and goes to the Learn view. */
export async function openLearn(page, url) {
  await page.setViewportSize({ width: 1280, height: 900 });
  const app = await open(page, url, { unfold: false });
  await app.train.show();
  return app;
}
