// Weights in the browser: the GPU worker loads the tiny UNet from a stand-in for the Hugging Face
// Hub (hub.mjs) in chunks, through the cache (chunk records in IndexedDB, their bytes in the
// origin private file system), straight onto the device, and computes what diffusers computed. A
// reload loads from the cache alone; a connection cut mid-file resumes; a corrupted cached chunk
// is noticed and fetched again; a 500 from the hub is retried; bytes corrupted on the way fail the
// SHA-256 check and nothing of them stays cached; the storage refusing a write mid-file leaves no
// half-file and the load completes; without IndexedDB, or
// without storage quota, the weights load uncached and the worker says why; two tabs loading the
// same file at once both complete and leave it once in the cache; a gigabyte file streams through
// in bounded wasm memory.
//
// The test drives the worker directly (its typed protocol as JSON, with the requests only tests
// send: the test build of the worker, `.ci/site`'s TEST_WORKER=1, served beside the site), from a
// page of the same origin as the site, so that what it measures is the worker's alone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { serve } from './server.mjs';
import { hub, syntheticSafetensors } from './hub.mjs';
import { launch } from './browser.mjs';
import { CACHE, cacheFiles, relativeL2, until } from './page.mjs';

const ROOT = resolve(import.meta.dirname, '..', '..');
const DIST = process.env.DIST_DIR ?? resolve(ROOT, 'dist');
const TEST_WORKER = process.env.TEST_WORKER_DIR ?? resolve(ROOT, 'dist-test');
const TINY = resolve(ROOT, 'tests', 'fixtures', 'tiny');
const WEIGHTS = 'unet/diffusion_pytorch_model.safetensors';
const WEIGHTS_KEY = `test/tiny/${WEIGHTS}`;
// Small chunks, so that the 2.2 MB fixture is nine of them and a resume is visible.
const CHUNK = 256 << 10;
// SwiftShader's f32 against diffusers' CPU f32.
const TOLERANCE = 1e-4;
const BIG_BYTES = 1 << 30;
// The cold-start measurement's file: cached once, then loaded from the cache onto the device.
const COLD_BYTES = 256 << 20;
const WASM_LIMIT = 256 << 20;

let site;
let models;
let expected;
let weightsSize;

/** The F32 tensors of a safetensors file, by name: { shape, values }. */
async function readSafetensors(path) {
  const bytes = await readFile(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__' || info.dtype !== 'F32') continue;
    const [start, end] = info.data_offsets;
    const data = bytes.subarray(8 + headerLength + start, 8 + headerLength + end);
    const values = [];
    for (let i = 0; i < data.length; i += 4) values.push(data.readFloatLE(i));
    tensors[name] = { shape: info.shape, values };
  }
  return tensors;
}

before(async () => {
  site = await serve([DIST, TEST_WORKER]);
  models = await hub({
    repos: { 'test/tiny': TINY },
    generated: {
      'test/big': { 'big.safetensors': syntheticSafetensors(BIG_BYTES) },
      'test/cold': { 'cold.safetensors': syntheticSafetensors(COLD_BYTES) },
    },
  });
  expected = await readSafetensors(resolve(TINY, 'expected.safetensors'));
  weightsSize = (await readFile(resolve(TINY, WEIGHTS))).length;
});
after(async () => {
  await models?.close();
  await site?.close();
});

/** Opens a same-origin page with a fresh GPU worker and a `request(message)` helper. */
async function openWorker(page) {
  // Any path of the site's origin will do (a 404 page): the app's own workers stay out of it.
  await page.goto(`${site.url}weights-test`);
  // The weights cache from the page, as promises: `idb.open()`, `idb.result(request)`,
  // `idb.done(transaction)`, `idb.record(key)` (a chunk record); and its chunk files in the origin
  // private file system: `opfs.read(path, at, length)`, `opfs.flip(path, at)` (a byte inverted).
  await page.evaluate((CACHE) => {
    window.CACHE = CACHE;
    const settle = (target, ok, value, error) =>
      new Promise((done, fail) => {
        target[ok] = () => done(value());
        target.onerror = () => fail(error());
      });
    window.idb = {
      open: () => {
        const open = indexedDB.open(CACHE.database);
        return settle(open, 'onsuccess', () => open.result, () => open.error);
      },
      result: (request) => settle(request, 'onsuccess', () => request.result, () => request.error),
      done: (tx) => settle(tx, 'oncomplete', () => undefined, () => tx.error),
      record: async (key) => {
        const db = await idb.open();
        const record = await idb.result(db.transaction(CACHE.chunks).objectStore(CACHE.chunks).get(key));
        db.close();
        return record;
      },
    };
    const folder = async () => (await navigator.storage.getDirectory()).getDirectoryHandle(CACHE.database);
    const file = async (path) => {
      const [repo, name] = path.split('/');
      return (await (await folder()).getDirectoryHandle(repo)).getFileHandle(name);
    };
    window.opfs = {
      read: async (path, at, length) =>
        new Uint8Array(await (await (await file(path)).getFile()).slice(at, at + length).arrayBuffer()),
      flip: async (path, at) => {
        const [byte] = await opfs.read(path, at, 1);
        const writable = await (await file(path)).createWritable({ keepExistingData: true });
        await writable.write({ type: 'write', position: at, data: new Uint8Array([byte ^ 0xff]) });
        await writable.close();
      },
    };
  }, CACHE);
  await page.evaluate(
    () =>
      new Promise((ready, fail) => {
        const worker = new Worker('./worker_loader.js', { name: 'test_worker' });
        window.messages = [];
        const waiting = new Map();
        worker.onmessage = ({ data }) => {
          window.messages.push(data);
          if (data.type === 'WorkerReady') ready();
          const terminal = ['ModelLoaded', 'UNetOutput', 'Error'].includes(data.type);
          if (terminal && waiting.has(data.id)) {
            waiting.get(data.id)(data);
            waiting.delete(data.id);
          }
        };
        worker.onerror = (event) => fail(new Error(`worker failed: ${event.message}`));
        window.request = (message) =>
          new Promise((done) => {
            waiting.set(message.id, done);
            worker.postMessage(message);
          });
      }),
  );
}

let nextId = 1;

/** Sends `message` (an id is added) and resolves to { answer, messages } for that id. */
async function request(page, message, timeout = 300_000) {
  const id = nextId++;
  let timer;
  const answer = await Promise.race([
    page.evaluate((message) => window.request(message), { ...message, id }),
    new Promise((_, fail) => {
      timer = setTimeout(() => fail(new Error(`no answer to ${message.type} in ${timeout} ms`)), timeout);
    }),
  ]).finally(() => clearTimeout(timer));
  const messages = await page.evaluate((id) => window.messages.filter((m) => m.id === id), id);
  if (answer.type === 'Error') throw new Error(`${message.type} failed: ${answer.message}`);
  return { answer, messages };
}

const source = (revision, extra = {}) => ({
  base_url: `${models.url}/`,
  repo: 'test/tiny',
  revision,
  chunk_bytes: CHUNK,
  cache: true,
  ...extra,
});

async function loadUNet(page, revision, extra) {
  const { answer, messages } = await request(page, {
    type: 'LoadUNet',
    source: source(revision, extra),
    config_file: 'unet/config.json',
    weights_file: WEIGHTS,
    precision: 'f32',
  });
  const weights = answer.files.find((f) => f.file === WEIGHTS);
  const progress = messages.filter((m) => m.type === 'DownloadProgress' && m.file === WEIGHTS);
  const cacheProblems = messages.filter((m) => m.type === 'CacheUnavailable');
  console.log(
    `load (${revision}): ${answer.elapsed_ms.toFixed(0)} ms; weights ${weights.size} bytes, ${weights.fetched_bytes} fetched, ` +
      `${weights.cached_bytes} from the cache, ${weights.corrupt_chunks} corrupt chunks, ${weights.retries} retries, ` +
      `stored ${weights.stored}; ${progress.length} progress messages; wasm memory ${(answer.wasm_memory / 2 ** 20).toFixed(1)} MiB`,
  );
  assert.equal(weights.size, weightsSize);
  assert.ok(progress.length > 0, 'progress is reported');
  const last = progress.at(-1);
  assert.equal(last.bytes, weightsSize);
  assert.equal(last.total, weightsSize);
  return { answer, weights, progress, cacheProblems };
}

/** Runs the loaded UNet on the fixture's `sq` inputs and compares with diffusers. */
async function checkOutput(page, label) {
  const { answer } = await request(page, {
    type: 'RunUNet',
    sample: expected['sq.input.sample'],
    timesteps: expected['sq.input.timestep'].values,
    context: expected['sq.input.encoder_hidden_states'],
  });
  const wanted = expected['sq.unet.out'];
  assert.deepEqual(answer.output.shape, wanted.shape);
  const error = relativeL2(answer.output.values, wanted.values);
  console.log(`${label}: UNet output vs diffusers: relative L2 ${error.toExponential(2)} (${answer.elapsed_ms.toFixed(0)} ms)`);
  assert.ok(error <= TOLERANCE, `${label}: relative L2 ${error} > ${TOLERANCE}`);
}

/** Empties the weights cache from `page`: its database and its chunk files. */
function clearCache(page) {
  return page.evaluate(async (database) => {
    await new Promise((done) => (indexedDB.deleteDatabase(database).onsuccess = done));
    const root = await navigator.storage.getDirectory();
    await root.removeEntry(database, { recursive: true }).catch(() => {});
  }, CACHE.database);
}

const fetched = async (file = WEIGHTS_KEY) => (await models.stats())[file]?.bytes ?? 0;

/** The keys of the cache's chunk records and manifests that start with `prefix`, read in `page`. */
function cachedRecords(page, prefix) {
  return page.evaluate(async (prefix) => {
    const db = await idb.open();
    const tx = db.transaction([CACHE.chunks, CACHE.files], 'readonly');
    const [chunks, files] = await Promise.all(
      [CACHE.chunks, CACHE.files].map((name) => idb.result(tx.objectStore(name).getAllKeys())),
    );
    db.close();
    return { chunks: chunks.filter((k) => k.startsWith(prefix)), files: files.filter((k) => k.startsWith(prefix)) };
  }, prefix);
}

test('weights download once, resume after a cut, survive a corrupted chunk', { timeout: 900_000 }, async (t) => {
  const browser = await launch({ webgpu: true });
  const { page } = browser;
  await browser.session(async () => {
    await openWorker(page);

    await t.test('(a) the first load downloads, caches, and computes what diffusers computes', async () => {
      await models.reset();
      const { weights, progress } = await loadUNet(page, 'main');
      assert.equal(weights.fetched_bytes, weightsSize);
      assert.equal(weights.cached_bytes, 0);
      assert.ok(weights.stored, 'the file is complete in the cache');
      assert.ok(progress.every((m) => !m.from_cache));
      assert.equal(await fetched(), weightsSize, 'the hub sent the file exactly once');
      await checkOutput(page, 'first load');
    });

    await t.test('(b) after a reload the weights come from the cache alone', async () => {
      await page.reload();
      await openWorker(page);
      await models.reset();
      const { weights, progress } = await loadUNet(page, 'main');
      assert.equal(weights.cached_bytes, weightsSize);
      assert.equal(weights.fetched_bytes, 0);
      assert.ok(progress.every((m) => m.from_cache));
      const stats = await models.stats();
      console.log('hub after the reload:', JSON.stringify(stats));
      assert.equal(await fetched(), 0, 'no weight bytes over the network');
      assert.equal(stats[WEIGHTS_KEY]?.requests ?? 0, 0, 'not even a HEAD request');
      await checkOutput(page, 'from the cache');
    });

    await t.test('(c) a connection cut mid-file resumes from the last complete chunk', async () => {
      await models.reset();
      const at = Math.floor(3.5 * CHUNK);
      await models.fault(WEIGHTS_KEY, 'cut', { at });
      const { weights } = await loadUNet(page, 'resume');
      const stats = await models.stats();
      console.log(`cut after ${at} bytes; hub: ${JSON.stringify(stats[WEIGHTS_KEY])}`);
      assert.ok(weights.retries >= 1, 'the cut was noticed');
      assert.ok(stats[WEIGHTS_KEY].ranges.includes(`${3 * CHUNK}-${weightsSize - 1}`), 'resumed at chunk 3');
      const total = await fetched();
      assert.ok(total <= weightsSize + CHUNK, `${total} bytes fetched for a ${weightsSize}-byte file`);
      assert.ok(weights.stored);
      await checkOutput(page, 'after a resume');
    });

    await t.test('(d) a corrupted cached chunk is detected and fetched again', async () => {
      // One byte of chunk 3 inverted where the cache keeps it: in its chunk file.
      const key = `test/tiny@main/${WEIGHTS}#000003`;
      const place = await page.evaluate(async (key) => {
        const record = await idb.record(key);
        await opfs.flip(record.file, record.at + 1234);
        return { file: record.file, at: record.at, inline: 'data' in record };
      }, key);
      assert.equal(place.inline, false, 'the chunk\'s bytes are in its file, not in its record');
      assert.equal(place.at, 3 * CHUNK);
      await models.reset();
      const { weights } = await loadUNet(page, 'main');
      assert.equal(weights.corrupt_chunks, 1);
      assert.equal(await fetched(), CHUNK, 'only the corrupted chunk is fetched again');
      assert.equal(weights.cached_bytes, weightsSize - CHUNK);
      await checkOutput(page, 'after a repair');
      // Repaired in the cache as well.
      await models.reset();
      const again = await loadUNet(page, 'main');
      assert.equal(again.weights.corrupt_chunks, 0);
      assert.equal(await fetched(), 0);
      // A chunk record as older builds wrote it (its bytes in the record, its SHA-256, no XXH3)
      // is still read and checked.
      await page.evaluate(async (key) => {
        const record = await idb.record(key);
        const data = await opfs.read(record.file, record.at, record.length);
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
        const sha256 = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
        const db = await idb.open();
        const tx = db.transaction(CACHE.chunks, 'readwrite');
        tx.objectStore(CACHE.chunks).put({ data, sha256 }, key);
        await idb.done(tx);
        db.close();
      }, `test/tiny@main/${WEIGHTS}#000002`);
      await models.reset();
      const legacy = await loadUNet(page, 'main');
      assert.equal(legacy.weights.corrupt_chunks, 0, 'an older record is read as it was written');
      assert.equal(legacy.weights.cached_bytes, weightsSize);
      assert.equal(await fetched(), 0);
    });

    await t.test('(e) a 500 from the hub is retried and the load completes', async () => {
      await models.reset();
      await models.fault(WEIGHTS_KEY, 'http500');
      const { weights } = await loadUNet(page, 'http500');
      const stats = await models.stats();
      console.log(`after a 500: ${weights.retries} retries; hub: ${JSON.stringify(stats[WEIGHTS_KEY])}`);
      assert.ok(weights.retries >= 1, 'the 500 was retried');
      assert.ok(stats[WEIGHTS_KEY].requests >= 2, 'asked again');
      assert.ok(weights.stored && weights.verified === 'Server', 'stored, and checked against the hub\'s SHA-256');
      await checkOutput(page, 'after a 500');
    });

    await t.test('(f) bytes corrupted on the way fail the SHA-256 check, name the file, and leave nothing cached', async () => {
      await models.reset();
      await models.fault(WEIGHTS_KEY, 'corrupt', { at: 5 * CHUNK + 100 });
      await assert.rejects(loadUNet(page, 'corrupt'), (error) => {
        assert.match(error.message, /diffusion_pytorch_model\.safetensors: the file's SHA-256 is [0-9a-f]{64}, not [0-9a-f]{64}: it was corrupted on the way/);
        return true;
      });
      // Nothing of it was kept: the next load fetches the whole file, and it is right.
      await models.reset();
      const { weights } = await loadUNet(page, 'corrupt');
      assert.equal(weights.cached_bytes, 0, 'no chunk of the corrupted download was kept');
      assert.equal(await fetched(), weightsSize);
      assert.ok(weights.stored && weights.verified === 'Server');
      await checkOutput(page, 'after a corrupted download');
    });

    await t.test('(i) the storage refusing a chunk mid-file (QuotaExceededError): the load completes uncached, no half-file stays', async () => {
      // The worker's chunk file throws QuotaExceededError from the fourth weights chunk on, as a
      // full disk does mid-write (the storage estimate said there was room).
      const filesBefore = await cacheFiles(page);
      const worker = page.workers()[0];
      await worker.evaluate((chunkBytes) => {
        const write = FileSystemSyncAccessHandle.prototype.write;
        let chunks = 0;
        self.restoreWrites = () => {
          FileSystemSyncAccessHandle.prototype.write = write;
        };
        FileSystemSyncAccessHandle.prototype.write = function (...args) {
          // The weights file's chunks are the only ones of a whole chunk's size.
          if (args[0].byteLength === chunkBytes && ++chunks > 3) {
            throw new DOMException('the test filled the disk', 'QuotaExceededError');
          }
          return write.apply(this, args);
        };
      }, CHUNK);
      await models.reset();
      const { weights, cacheProblems } = await loadUNet(page, 'quota-mid');
      const problem = cacheProblems.find((m) => m.file === WEIGHTS);
      console.log('cache problem mid-file:', JSON.stringify(problem));
      assert.ok(problem?.quota_exceeded, 'the worker says the quota ran out');
      assert.ok(!weights.stored, 'not stored');
      assert.equal(weights.fetched_bytes, weightsSize, 'the whole file came from the network, once');
      await checkOutput(page, 'after a write refused mid-file');
      const records = await cachedRecords(page, `test/tiny@quota-mid/${WEIGHTS}`);
      assert.deepEqual(records, { chunks: [], files: [] }, 'no half-file is left in the cache');
      // Nor its chunk file: what the load added is the stored config file alone (under a chunk).
      const added = (await cacheFiles(page)).filter((f) => !filesBefore.some((b) => b.path === f.path));
      assert.ok(added.length <= 1 && added.every((f) => f.size < CHUNK), `no half-file: ${JSON.stringify(added)}`);
      // With room again, the next load fetches and stores it whole.
      await worker.evaluate(() => self.restoreWrites());
      await models.reset();
      const again = await loadUNet(page, 'quota-mid');
      assert.equal(again.weights.cached_bytes, 0);
      assert.ok(again.weights.stored && again.weights.verified === 'Server');
    });

    await t.test('(j) without IndexedDB (blocked, private mode) the weights load from the network, and the worker says so', async () => {
      const worker = page.workers()[0];
      await worker.evaluate(() => {
        const open = IDBFactory.prototype.open;
        self.restoreIndexedDbOpen = () => {
          IDBFactory.prototype.open = open;
        };
        IDBFactory.prototype.open = function () {
          throw new DOMException('The user denied permission to access the database.', 'SecurityError');
        };
      });
      await models.reset();
      const { weights, cacheProblems } = await loadUNet(page, 'main');
      console.log('without IndexedDB:', JSON.stringify(cacheProblems));
      const problem = cacheProblems.find((m) => m.file === '');
      assert.match(problem?.message ?? '', /The weights cache cannot be opened \(.*SecurityError.*\): nothing will be cached/);
      assert.equal(weights.cached_bytes, 0);
      assert.equal(weights.fetched_bytes, weightsSize);
      assert.ok(!weights.stored);
      await checkOutput(page, 'without IndexedDB');
      await worker.evaluate(() => self.restoreIndexedDbOpen());
    });

    await t.test('(k) another tab upgrading the cache mid-load is not blocked: this load closes its connection and completes uncached', async () => {
      // A newer build in another tab opens the weights database at a higher version while this
      // worker is writing a (throttled) file into it.
      await models.reset();
      await models.fault(WEIGHTS_KEY, 'slow', { bps: Math.round(weightsSize / 6) });
      const loading = loadUNet(page, 'upgrade');
      await until(
        () => page.evaluate(() => window.messages.filter((m) => m.type === 'DownloadProgress' && m.bytes > 0).length),
        (n) => n > 2,
        'the load to be writing',
      );
      const other = await browser.context.newPage();
      await other.goto(`${site.url}weights-test`);
      const upgrade = await other.evaluate(
        (database) =>
          new Promise((done, fail) => {
            const started = performance.now();
            const open = indexedDB.open(database, 1000);
            const timer = setTimeout(() => done({ blocked: true }), 20_000);
            open.onsuccess = () => {
              clearTimeout(timer);
              open.result.close();
              done({ blocked: false, ms: performance.now() - started });
            };
            open.onerror = () => fail(open.error);
          }),
        CACHE.database,
      );
      await other.close();
      console.log(`the other tab's upgrade: ${JSON.stringify(upgrade)}`);
      assert.equal(upgrade.blocked, false, "the worker's open connection gave way");
      const { weights, cacheProblems } = await loading;
      console.log('after the upgrade elsewhere:', JSON.stringify(cacheProblems));
      assert.ok(cacheProblems.some((m) => m.file === WEIGHTS), 'the worker says the file will not be cached');
      assert.ok(!weights.stored);
      await checkOutput(page, 'after an upgrade in another tab');
      // The next load meets the newer database: it says the cache cannot be opened, and loads.
      await models.reset();
      const next = await loadUNet(page, 'main');
      assert.match(next.cacheProblems.find((m) => m.file === '')?.message ?? '', /The weights cache cannot be opened \(.*VersionError/);
      await clearCache(page);
    });

    await t.test('(l) two tabs loading the same file at once both complete, and the cache holds it once, whole', async () => {
      // Two tabs of the site, each with its own worker, start the same (throttled) download into
      // the one cache: they write the same chunks and manifest concurrently.
      await models.reset();
      await models.fault(WEIGHTS_KEY, 'slow', { bps: Math.round(weightsSize / 4) });
      const other = await browser.context.newPage();
      try {
        await openWorker(other);
        const [first, second] = await Promise.all([loadUNet(page, 'two-tabs'), loadUNet(other, 'two-tabs')]);
        for (const [label, load] of [['first tab', first], ['second tab', second]]) {
          console.log(`${label}: ${JSON.stringify(load.weights)}; ${JSON.stringify(load.cacheProblems)}`);
          assert.ok(load.weights.verified === 'Server', `${label}: verified`);
        }
        assert.ok(first.weights.stored || second.weights.stored, 'one of them stored the file');
        // The chunk file is locked while one worker holds it: the other loads from the network
        // and says why (or, had it come second, read the cache the first had filled).
        for (const { weights, cacheProblems } of [first, second].filter((load) => !load.weights.stored)) {
          assert.equal(weights.fetched_bytes, weightsSize);
          assert.match(cacheProblems.find((m) => m.file === WEIGHTS)?.message ?? '', /another tab of this site is using the cached file/);
        }
        await checkOutput(page, 'first tab, loaded beside another');
        await checkOutput(other, 'second tab, loaded beside another');
      } finally {
        await other.close();
      }
      // What the cache holds: the file's chunks once each and its manifest, complete; the next
      // load reads it all from there and verifies it.
      const records = await cachedRecords(page, `test/tiny@two-tabs/${WEIGHTS}`);
      assert.deepEqual(
        { chunks: records.chunks.length, files: records.files.length },
        { chunks: Math.ceil(weightsSize / CHUNK), files: 1 },
      );
      await models.reset();
      const { weights } = await loadUNet(page, 'two-tabs');
      assert.equal(weights.cached_bytes, weightsSize, 'the next load reads the whole file from the cache');
      assert.equal(weights.fetched_bytes, 0);
      assert.ok(weights.verified === 'Server');
      await checkOutput(page, 'from the cache the two tabs filled');
    });

    await t.test('(n) a browser without synchronous OPFS access keeps the chunks in IndexedDB, and reads them back', async () => {
      // As browsers from before 2023 are: first no createSyncAccessHandle (getDirectory alone, as
      // in early Safari), then no getDirectory either. The worker checks before calling.
      const worker = page.workers()[0];
      await worker.evaluate(() => {
        const handle = Object.getOwnPropertyDescriptor(FileSystemFileHandle.prototype, 'createSyncAccessHandle');
        const storage = Object.getOwnPropertyDescriptor(StorageManager.prototype, 'getDirectory');
        self.restoreOpfs = () => {
          Object.defineProperty(FileSystemFileHandle.prototype, 'createSyncAccessHandle', handle);
          Object.defineProperty(StorageManager.prototype, 'getDirectory', storage);
        };
        delete FileSystemFileHandle.prototype.createSyncAccessHandle;
        self.removeGetDirectory = () => delete StorageManager.prototype.getDirectory;
      });
      try {
        const filesBefore = await cacheFiles(page);
        await models.reset();
        const first = await loadUNet(page, 'no-opfs');
        assert.deepEqual(first.cacheProblems, [], 'nothing to report: the cache works without OPFS');
        assert.ok(first.weights.stored && first.weights.verified === 'Server');
        assert.equal(first.weights.fetched_bytes, weightsSize);
        const record = await page.evaluate((key) => idb.record(key), `test/tiny@no-opfs/${WEIGHTS}#000001`);
        assert.equal(record?.data?.byteLength, CHUNK, 'the chunk\'s bytes are in its record');
        assert.ok(!('file' in record), 'and in no file');
        const added = (await cacheFiles(page)).filter((f) => !filesBefore.some((b) => b.path === f.path));
        assert.deepEqual(added, [], 'no chunk file was made');
        await worker.evaluate(() => self.removeGetDirectory());
        await models.reset();
        const again = await loadUNet(page, 'no-opfs');
        assert.deepEqual(again.cacheProblems, []);
        assert.equal(again.weights.cached_bytes, weightsSize, 'read back from the records alone');
        assert.equal(again.weights.fetched_bytes, 0);
        assert.equal(await fetched(), 0);
        await checkOutput(page, 'without OPFS, from IndexedDB');
      } finally {
        await worker.evaluate(() => self.restoreOpfs());
      }
      // With OPFS back, the same records still read (inline records are read where they are).
      await models.reset();
      const back = await loadUNet(page, 'no-opfs');
      assert.equal(back.weights.cached_bytes, weightsSize);
      assert.equal(await fetched(), 0);
    });
  });
});

test('(g) without storage quota the weights load uncached, and the worker says how much is needed', { timeout: 600_000 }, async () => {
  const browser = await launch({ webgpu: true });
  const { context, page } = browser;
  await browser.session(async () => {
    await page.goto(`${site.url}weights-test`);
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: site.url.replace(/\/$/, ''), quotaSize: 64 << 10 });
    await openWorker(page);
    await models.reset();
    const { weights, cacheProblems } = await loadUNet(page, 'quota');
    console.log('cache problems:', JSON.stringify(cacheProblems));
    const problem = cacheProblems.find((m) => m.file === WEIGHTS);
    assert.ok(problem, 'the worker reports that the weights cannot be cached');
    assert.ok(problem.quota_exceeded, problem.message);
    assert.equal(problem.needed, weightsSize);
    assert.ok(!weights.stored);
    assert.equal(weights.fetched_bytes, weightsSize);
    await checkOutput(page, 'uncached');
  });
});

// The worker holds one 16 MiB network chunk; StreamLoader holds at most the one tensor that
// straddles chunks (largest here 56 MiB) and flushes each upload to the device, so the wasm heap
// (which never shrinks) stays bounded whatever the file size.
test('(h) a gigabyte of weights streams through in bounded wasm memory', { timeout: 900_000 }, async () => {
  const browser = await launch({ webgpu: true });
  const { page } = browser;
  await browser.session(async () => {
    await openWorker(page);
    await models.reset();
    const { answer, messages } = await request(
      page,
      {
        type: 'StreamWeights',
        source: { base_url: models.url, repo: 'test/big', revision: 'main', chunk_bytes: null, cache: false },
        file: 'big.safetensors',
        precision: 'f32',
      },
      840_000,
    );
    const [file] = answer.files;
    let seen = 0;
    for (const m of messages.filter((m) => m.type === 'DownloadProgress')) {
      if (m.wasm_memory > seen) console.log(`wasm memory ${(m.wasm_memory / 2 ** 20).toFixed(0)} MiB at ${(m.bytes / 2 ** 20).toFixed(0)} MiB`);
      seen = Math.max(seen, m.wasm_memory);
    }
    const peak = Math.max(answer.wasm_memory, ...messages.filter((m) => m.wasm_memory).map((m) => m.wasm_memory));
    console.log(
      `streamed ${(file.size / 2 ** 30).toFixed(2)} GiB in ${(answer.elapsed_ms / 1000).toFixed(1)} s; ` +
        `wasm memory at most ${(peak / 2 ** 20).toFixed(1)} MiB (limit ${WASM_LIMIT / 2 ** 20} MiB)`,
    );
    assert.ok(file.size >= BIG_BYTES);
    assert.equal(file.fetched_bytes, file.size);
    assert.ok(peak <= WASM_LIMIT, `wasm memory ${peak} > ${WASM_LIMIT}`);
  });
});

test('(m) a cold start from the cache: IndexedDB to the device, MB/s printed', { timeout: 600_000 }, async () => {
  const browser = await launch({ webgpu: true });
  const { page } = browser;
  try {
    await openWorker(page);
    await models.reset();
    const stream = (label) =>
      request(
        page,
        {
          type: 'StreamWeights',
          source: { base_url: models.url, repo: 'test/cold', revision: 'main', chunk_bytes: null, cache: true },
          file: 'cold.safetensors',
          precision: 'f32',
        },
        540_000,
      ).then(({ answer }) => {
        const [file] = answer.files;
        const rate = file.size / 1e6 / (answer.elapsed_ms / 1000);
        console.log(
          JSON.stringify({ bench: `cold start: ${label}`, mib: file.size / 2 ** 20, ms: Math.round(answer.elapsed_ms), mb_per_s: Math.round(rate), ...file }),
        );
        return { ...file, elapsed_ms: answer.elapsed_ms };
      });
    const first = await stream('downloaded and stored');
    // A generated file whose hub names no SHA-256 (hashing it per run is not worth it): reported
    // as checked against its size and chunks only, as the page must.
    assert.ok(first.stored && first.verified === 'Unchecked', JSON.stringify(first));
    await page.reload();
    await openWorker(page);
    const cached = await stream('from the cache');
    assert.equal(cached.cached_bytes, cached.size, 'all of it from the cache');
    assert.equal(cached.fetched_bytes, 0);
    assert.equal(cached.verified, 'Unchecked', 'still reported as unchecked from the cache');
    // The worker's account of its time: every part was spent, and together they fit in the load.
    const parts = Object.values(cached.times);
    assert.equal(parts.length, 4);
    assert.ok(parts.every((ms) => ms > 0), JSON.stringify(cached.times));
    assert.ok(parts.reduce((a, b) => a + b) <= cached.elapsed_ms, JSON.stringify(cached.times));
    // The first stage alone, in the page: the same chunk records from IndexedDB, one at a time as
    // the loader reads them, and their bytes from the chunk file (File.slice: a page has no
    // synchronous access handle; sd15.test measures both).
    const read = await page.evaluate(async (prefix) => {
      const db = await idb.open();
      const chunks = () => db.transaction(CACHE.chunks).objectStore(CACHE.chunks);
      const keys = await idb.result(chunks().getAllKeys(IDBKeyRange.bound(prefix, `${prefix}\uffff`)));
      let started = performance.now();
      const records = [];
      for (const key of keys) records.push(await idb.result(chunks().get(key)));
      const recordsMs = performance.now() - started;
      db.close();
      started = performance.now();
      let bytes = 0;
      for (const { file, at, length } of records) bytes += (await opfs.read(file, at, length)).length;
      return { bytes, recordsMs, ms: performance.now() - started };
    }, 'test/cold@main/cold.safetensors#');
    console.log(JSON.stringify({ bench: 'cold start: the cache alone', records_ms: Math.round(read.recordsMs), file_ms: Math.round(read.ms), file_mb_per_s: Math.round(read.bytes / 1e3 / read.ms) }));
  } catch (error) {
    console.log(browser.logs.join('\n'));
    throw error;
  } finally {
    await clearCache(page).catch(() => {});
    await browser.close();
  }
});
