// Debian's headless Chromium, driven by playwright-core (no browser download, ever).
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = resolve(import.meta.dirname, '..', 'artifacts');

// Flags that work on a machine with no GPU and no network:
// - WebGPU is behind --enable-unsafe-webgpu on Linux; Chromium then serves it on SwiftShader
//   (software Vulkan), with no shader-f16 and 1 GiB buffer limits.
// - The rest keep Chromium from phoning home (the network is closed) and from needing a sandbox
//   (we run as root in CI).
const COMMON_FLAGS = [
  '--no-sandbox',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
export const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan'];
// Without WebGPU: no unsafe flag, WebGPU's feature and the GPU process switched off.
export const NO_WEBGPU_FLAGS = ['--disable-features=WebGPU', '--disable-gpu'];

/** Launches Chromium with a fresh profile; resolves to { context, page, close, logs, session }. */
export async function launch({ webgpu }) {
  const profile = await mkdtemp(join(tmpdir(), 'controlnet-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...COMMON_FLAGS, ...(webgpu ? WEBGPU_FLAGS : NO_WEBGPU_FLAGS)],
    viewport: { width: 1100, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const logs = [];
  page.on('console', (message) => logs.push(`[${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => logs.push(`[pageerror] ${error.message}`));
  page.on('worker', (worker) => {
    logs.push(`[worker] started ${worker.url()}`);
    worker.on('console', (message) => logs.push(`[worker ${message.type()}] ${message.text()}`));
    worker.on('close', () => logs.push(`[worker] closed ${worker.url()}`));
  });
  context.on('weberror', (error) => logs.push(`[weberror] ${error.error().message}`));
  const close = async () => {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  };
  return {
    context,
    page,
    logs,
    close,
    /**
     * Runs `body()`, then closes the browser whatever happened. On a failure it first saves a
     * screenshot of `page` as `{failure}.png` (when `failure` is named) and prints the browser's
     * last log lines, then fails as `body` did.
     */
    session: async (body, { page: shown = page, failure } = {}) => {
      try {
        return await body();
      } catch (error) {
        if (failure) await screenshot(shown, failure).catch(() => {});
        console.log(logs.slice(-60).join('\n'));
        throw error;
      } finally {
        await close();
      }
    },
  };
}

/** Saves a full-page screenshot under tests/artifacts/. */
export async function screenshot(page, name) {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
