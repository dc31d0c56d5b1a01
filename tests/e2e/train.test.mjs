// Training a ControlNet in the tab (the Learn view), on the CPU backend the page uses without
// WebGPU: three steps with a fixed seed give the native CLI's losses and zero-convolution norms
// (rel. 1e-4) on the same world pairs (the CLI reads the folder `controlnet world make` writes,
// the worker makes them as it goes); the zero-initialised ControlNet's step-0 probe images are the
// locked model's, pixel for pixel; Gaussian convolutions (the paper's ablation) change them; pause
// and resume continue a run; at conditioning scale 0 the probe is the locked model's again; "Use
// this ControlNet" puts it in the generator, which makes an image with it. A screenshot goes to
// tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { serve } from './server.mjs';
import { launch, screenshot } from './browser.mjs';
import { SHAPES, openLearn, until } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const CLI = process.env.CONTROLNET_CLI ?? resolve(ROOT, 'target', 'debug', 'controlnet');
// The shapes repository as the site serves it (web::models::SHAPES).
const RUN = { steps: 3, batch: 2, lr: 0.0002, seed: 7, examples: 16 };
const REL = 1e-4;

let site;
let scratch;
before(async () => {
  site = await serve(DIST);
  scratch = await mkdtemp(join(tmpdir(), 'controlnet-train-'));
});
after(async () => {
  await site?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const status = (page) => page.getByTestId('train-status').getAttribute('data-status');
const step = async (page) => Number(((await page.getByTestId('train-status').textContent()).match(/step (\d+)/) ?? [])[1] ?? 0);

const parse = (text) => text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

function close(what, got, want) {
  assert.ok(Math.abs(got - want) <= REL * Math.abs(want) + 1e-12, `${what}: tab ${got}, native ${want}`);
}

test('a ControlNet trains in the tab as it does natively; zero convolutions leave the image untouched', { timeout: 15 * 60_000 }, async () => {
  const browser = await launch({ webgpu: false });
  const { page } = browser;
  await browser.session(async () => {
    const app = await openLearn(page, site.url);
    // The recipe's settings, but a batch of 4 on the CPU backend.
    assert.equal(await page.getByTestId('train-lr').inputValue(), '0.0002');
    assert.equal(await page.getByTestId('train-batch').inputValue(), '4');
    await app.train.configure({ ...RUN, probeEvery: 0 });
    const started = Date.now();
    await page.getByTestId('train-start').click();
    await until(() => status(page), (s) => s === 'finished' || s === 'failed', 'the run to finish', 10 * 60_000);
    assert.equal(await status(page), 'finished', await page.getByTestId('train-status').textContent());
    const seconds = (Date.now() - started) / 1000;
    const tab = parse(await page.getByTestId('train-log').evaluate(async (a) => (await fetch(a.href)).text()));
    const first = page.getByTestId('train-probe-first');
    assert.equal(await first.getAttribute('data-step'), '0');
    assert.equal(await first.getAttribute('data-differing'), '0, 0, 0', 'the step-0 images are the locked model\'s');

    // The same run natively: the pairs from a folder, the CPU backend.
    const data = join(scratch, 'data');
    const out = join(scratch, 'run');
    await promisify(execFile)(CLI, ['world', 'make', '--out', data, '--count', String(RUN.examples), '--seed', String(RUN.seed), '--size', '64', '--condition', 'canny']);
    const native = await promisify(execFile)(CLI, [
      'train', 'controlnet', '--model', join(SHAPES, 'pipeline'), '--data', data, '--out', out,
      '--steps', String(RUN.steps), '--batch', String(RUN.batch), '--lr', String(RUN.lr), '--seed', String(RUN.seed),
      '--resolution', '64', '--backend', 'cpu',
    ]);
    const reference = parse(await readFile(join(out, 'log.jsonl'), 'utf8'));
    assert.equal(tab.length, RUN.steps);
    assert.equal(reference.length, RUN.steps);
    for (const [mine, theirs] of tab.map((line, i) => [line, reference[i]])) {
      assert.equal(mine.step, theirs.step);
      close(`loss at step ${mine.step}`, mine.loss, theirs.loss);
      close(`gradient norm at step ${mine.step}`, mine.grad_norm, theirs.grad_norm);
      close(`the hint encoder's zero conv at step ${mine.step}`, mine.hint_conv_norm, theirs.hint_conv_norm);
      assert.equal(mine.zero_convs.length, theirs.zero_convs.length);
      mine.zero_convs.forEach((z, i) => {
        close(`zero conv ${i + 1}'s norm at step ${mine.step}`, z.weight_norm, theirs.zero_convs[i].weight_norm);
        close(`zero conv ${i + 1}'s residual at step ${mine.step}`, z.output_mean, theirs.zero_convs[i].output_mean);
      });
    }
    const rate = (native.stderr.match(/([\d.]+) it\/s/g) ?? []).at(-1);
    console.log(JSON.stringify({ test: 'train: tab = native', steps: RUN.steps, batch: RUN.batch, seconds, tabStepsPerSecond: tab.length && (await page.getByTestId('train-status').textContent()), native: rate, losses: tab.map((l) => l.loss) }));

    // The ablation: Gaussian convolutions change the image before any step. And pause / resume.
    await app.train.configure({ ...RUN, steps: 1000, probeEvery: 50, init: 'gaussian' });
    await page.getByTestId('train-start').click();
    await until(() => step(page), (s) => s >= 2, 'the Gaussian run to step', 5 * 60_000);
    const gaussian = await page.getByTestId('train-probe-first').getAttribute('data-differing');
    assert.ok(gaussian.split(', ').every((d) => Number(d) > 0), `Gaussian convolutions change every probe image: ${gaussian}`);
    // Side by side: the zero run's curve and probe grid stay for comparison.
    assert.equal(await page.getByTestId('train-probe-previous').getAttribute('data-step'), '0');
    const previous = page.locator('polyline[data-testid="train-loss-line"][data-label^="previous run (canny, zero convs"]');
    assert.equal(Number(await previous.getAttribute('data-points')), RUN.steps, 'the zero run\'s loss beside the Gaussian run\'s');
    await page.getByTestId('train-pause').click();
    await until(() => status(page), (s) => s === 'paused', 'the pause');
    const paused = await step(page);
    await page.getByTestId('train-resume').click();
    await until(() => step(page), (s) => s >= paused + 2, 'the run to go on', 5 * 60_000);
    await page.getByTestId('train-pause').click();
    await until(() => status(page), (s) => s === 'paused', 'the second pause');
    const lines = await page.locator('polyline[data-testid="train-loss-line"][data-label="loss"]').getAttribute('data-points');
    assert.equal(Number(lines), await step(page), 'the loss chart draws every step of the resumed run');
    const recipe = await page.locator('polyline[data-testid="train-loss-line"][data-label="the recipe\'s run (smoothed)"]').getAttribute('data-points');
    const shipped = parse(await readFile(join(SHAPES, 'logs', 'controlnet-canny', 'log.jsonl'), 'utf8'));
    assert.equal(Number(recipe), shipped.filter((l) => l.step <= 1000).length, 'the recipe\'s run is drawn behind it');
    await screenshot(page, 'train-1280x900');

    // Paused: the probe at conditioning scale 0 — every residual times 0 — is the locked model's.
    await page.getByTestId('train-scale').evaluate((input) => {
      input.value = '0';
      input.dispatchEvent(new Event('change', { bubbles: true }));
    });
    const scaled = page.getByTestId('train-probe-scaled');
    await scaled.waitFor({ timeout: 5 * 60_000 });
    assert.equal(await scaled.getAttribute('data-scale'), '0');
    assert.equal(await scaled.getAttribute('data-differing'), '0, 0, 0', 'at scale 0 the images are the locked model\'s');

    // Use it: the ControlNet joins the loaded models, a unit chooses it, and it generates.
    await page.getByTestId('train-use').click();
    const added = (await page.getByTestId('train-added').textContent()).match(/“(.+)”/)[1];
    assert.match(added, /^trained here \(canny, Gaussian, step \d+\)$/);
    await page.getByTestId('nav-generate').click();
    const unit = page.getByTestId('unit-controlnet').first();
    await unit.selectOption({ label: added });
    await app.pad.stroke([[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7], [0.3, 0.3]]);
    await app.generate.run('done', 5 * 60_000);
    const parameters = await page.getByTestId('result-image').getAttribute('title');
    assert.ok(parameters.includes(added), `the image's parameters name the ControlNet: ${parameters}`);
    await page.getByTestId('nav-learn').click();
    await page.getByTestId('train-reset').click();
    await until(() => status(page), (s) => s === 'idle', 'the reset');
  }, { page, failure: 'train-failure' });
});
