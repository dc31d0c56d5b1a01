// The Learn view replays the recipe's own ControlNet runs from the logs the site ships: each chart
// draws every committed step (the loss raw and smoothed, each zero convolution's weight norm and
// residual), the slider shows a step's values and the run's latest sample at that step, Play
// scrubs through the run, and the other run loads. A screenshot goes to tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { serve } from './server.mjs';
import { launch, screenshot } from './browser.mjs';
import { SHAPES, TIMEOUT_MS, until } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
// The site's copy of the shapes repository (web::models::SHAPES, vocabulary::shapes::LOGS).
const LOGS = resolve(SHAPES, 'logs');

let site;
before(async () => {
  site = await serve(DIST);
});
after(async () => {
  await site?.close();
});

const readLog = async (run) =>
  (await readFile(resolve(LOGS, run, 'log.jsonl'), 'utf8'))
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line));

/** The charts' lines: { testid: [{ label, points }] }. */
const lines = (page) =>
  page.evaluate(() => {
    const out = {};
    for (const line of document.querySelectorAll('polyline[data-testid]')) {
      const id = line.dataset.testid;
      (out[id] ??= []).push({ label: line.dataset.label, points: line.getAttribute('points').trim().split(/\s+/).length });
    }
    return out;
  });

async function setStep(page, step) {
  await page.getByTestId('learn-step').evaluate((input, value) => {
    input.value = String(value);
    input.dispatchEvent(new Event('input', { bubbles: true }));
  }, step);
}

test('the Learn view replays the shipped ControlNet runs', { timeout: 5 * 60_000 }, async () => {
  const browser = await launch({ webgpu: false });
  const { page } = browser;
  await browser.session(async () => {
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.goto(site.url);
    await page.getByTestId('nav-learn').click();
    for (const [run, label] of [['controlnet-canny', 'Canny'], ['controlnet-scribble', 'Scribble']]) {
      const log = await readLog(run);
      if (label !== 'Canny') {
        await page.getByTestId('learn-run').selectOption(run);
        // A new run opens at its last step (the other was left at another).
        await until(() => page.getByTestId('learn-value-step').textContent().catch(() => ''), (t) => t === String(log.at(-1).step), `${run} to open`);
      }
      const convs = log[0].zero_convs.length;
      // The weight norms: a line per zero convolution, and the hint encoder's last conv where the
      // log has it (logs from before it was logged do not).
      const norms = convs + (log.some((line) => line.hint_conv_norm !== undefined) ? 1 : 0);
      const drawn = await until(
        () => lines(page),
        (l) => l['learn-loss-line']?.[0]?.points === log.length && l['learn-norms-line']?.length === norms,
        `${run}'s charts`,
        TIMEOUT_MS,
      );
      assert.deepEqual(drawn['learn-loss-line'].map((l) => l.points), [log.length, log.length], 'loss, raw and smoothed');
      assert.deepEqual(drawn['learn-norms-line'].map((l) => l.points), Array(norms).fill(log.length), 'a line per zero convolution (and the hint encoder\'s last conv)');
      assert.deepEqual(drawn['learn-residuals-line'].map((l) => l.points), Array(convs).fill(log.length));

      // A step: its values, and the latest sample at or before it.
      const step = Math.round(log.length * 0.6);
      await setStep(page, step);
      const line = log.find((l) => l.step === step);
      const shown = Number(await page.getByTestId('learn-value-loss').textContent());
      assert.ok(Math.abs(shown - line.loss) <= 1e-3 * Math.abs(line.loss) + 1e-4, `loss at step ${step}: ${shown} vs ${line.loss}`);
      assert.equal(await page.getByTestId('learn-value-step').textContent(), String(step));
      const sample = Number(await page.getByTestId('learn-sample-image').getAttribute('data-step'));
      assert.ok(sample <= step && step - sample < 500, `the sample shown (step ${sample}) is the latest at step ${step}`);
      const loaded = await page.getByTestId('learn-sample-image').evaluate((img) => img.decode().then(() => img.naturalWidth));
      assert.ok(loaded > 0, 'the sample image loads from the site');
      if (label === 'Canny') await screenshot(page, 'learn-1280x800');
    }

    // Play scrubs from the start.
    await setStep(page, 1);
    await page.getByTestId('learn-play').click();
    const moving = await until(
      async () => Number((await page.getByTestId('learn-value-step').textContent()) || 0),
      (value) => value > 100,
      'Play to move the step',
      30_000,
    );
    await page.getByTestId('learn-play').click();
    console.log(JSON.stringify({ test: 'learn', playedTo: moving }));
    // And back to the generator, which kept its state.
    await page.getByTestId('nav-generate').click();
    await page.getByTestId('models-status').waitFor({ timeout: TIMEOUT_MS });
  }, { page, failure: 'learn-failure' });
});
