// Pipelines of other shapes than SD1.5's, through the page (tests/fixtures/make_topology_fixtures.py):
// diffusers' own ControlNet test components (a VAE that scales by 2, a first UNet block with fewer
// channels than attention heads, one norm group, a 5-layer CLIP of width 32) and a three-level
// pipeline (a VAE that scales by 4). Each is served by the hub stand-in as a diffusers folder,
// loaded through the models panel, and generates, from the seed's noise, the image diffusers made
// (PSNR ≥ 40 dB; without the ControlNet's residuals diffusers' image is 24–25 dB away, so the
// ControlNet counts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { serve } from './server.mjs';
import { hub } from './hub.mjs';
import { launch, screenshot } from './browser.mjs';
import { open, psnr } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const FIXTURES = resolve(ROOT, 'tests', 'fixtures');
const TOPOLOGIES = ['dummy', 'three'];
const MIN_PSNR_DB = 40;

let site;
let models;

before(async () => {
  site = await serve(DIST);
  models = await hub({
    repos: Object.fromEntries(TOPOLOGIES.map((name) => [`test/${name}`, resolve(FIXTURES, 'topology', name)])),
  });
});
after(async () => {
  await models?.close();
  await site?.close();
});

test('pipelines of other shapes load in the page and equal diffusers', { timeout: 15 * 60_000 }, async () => {
  const browser = await launch({ webgpu: true });
  const { page } = browser;
  await browser.session(async () => {
    const app = await open(page, site.url);
    for (const [n, name] of TOPOLOGIES.entries()) {
      const folder = resolve(FIXTURES, 'topology', name);
      const fixture = JSON.parse(await readFile(resolve(folder, 'fixture.json'), 'utf8'));
      await app.models.choose(models.url, { pipeline: `test/${name}` });
      await app.models.load(`test/${name} to load`);

      if (n === 0) {
        await app.generate.type(fixture.settings);
        await app.unit(0).useMap(await readFile(resolve(FIXTURES, fixture.settings.control)), 'edges.png');
      }
      await app.generate.run();
      const result = await psnr(page, await readFile(resolve(folder, 'expected.png')));
      console.log(
        JSON.stringify({
          test: `${name} (VAE scale ${fixture.vae_scale_factor}) in the page vs diffusers`,
          ...result,
          // Infinity (identical pixels) would print as null.
          db: Number.isFinite(result.db) ? result.db : 'identical',
          without_controlnet_db: fixture.psnr_without_controlnet_db,
        }),
      );
      await screenshot(page, `topology-${name}`);
      assert.ok(result.db >= MIN_PSNR_DB, `${name}: ${JSON.stringify(result)}`);
    }
  }, { page, failure: 'topology-failure' });
});
