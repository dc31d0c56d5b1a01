// A stand-in for the Hugging Face Hub, on 127.0.0.1 and a free port, behaving as the real one
// does where the browser's downloader depends on it:
//
//   GET|HEAD /{owner}/{repo}/resolve/{revision}/{path}
//        → for LFS files (`.safetensors`), 302 to a second origin (the Hub's CDN, here another
//          port), with `X-Linked-Size` and `X-Linked-Etag` (the SHA-256) on the redirect only, as
//          the Hub sends them: `fetch()` follows the redirect and never shows them. The CDN
//          answers with the bytes (HTTP Range requests, HEAD, CORS) and no hash. Other files are
//          served directly. Pass `redirect: false` for direct answers with the linked headers.
//   GET  /api/models/{owner}/{repo}/revision/{revision}?blobs=true
//        → the Hub's JSON API: `{ id, sha, siblings: [{ rfilename, size, lfs: { sha256, size } }] }`,
//          `lfs` for `.safetensors` files (omitted for all with `hashes: false`: a hub that sends
//          no SHA-256, whose files the page must report as unverified)
//
// and with what a test needs to watch and break it:
//
//   GET  /__stats                  → { "<owner>/<repo>/<path>": { bytes, requests, ranges: [...] } }
//                                    (requests: to `/resolve/`; bytes and ranges: what the CDN served)
//   POST /__reset                  → clears the counters and every fault
//   POST /__fault?file=F&kind=K…   → arms a fault for file F (`<owner>/<repo>/<path>`), once:
//        kind=cut&at=N             the connection is closed after N bytes of the body
//        kind=http500              the next request for F answers 500
//        kind=corrupt&at=N         the byte at file offset N is flipped in the next response
//        kind=slow&bps=B           the next response is throttled to B bytes per second
//
// Repositories are folders (`repos` maps "owner/repo" to a directory) or generated files
// (`generated` maps "owner/repo" to { path: { size, read(start, end) → Buffer, sha256? } }), so a
// test can serve a multi-gigabyte safetensors file without ever writing it to disk; a generated
// file's SHA-256 is announced only where it names one.
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { join, normalize, resolve } from 'node:path';

const CORS = {
  'access-control-allow-origin': '*',
  'access-control-allow-headers': 'range, content-type',
  'access-control-allow-methods': 'GET, HEAD, OPTIONS',
  'access-control-expose-headers': 'content-length, content-range, accept-ranges, x-linked-etag, x-linked-size, etag',
};

/** Parses `bytes=a-b` / `bytes=a-` against `size`; null when absent or unsatisfiable. */
function parseRange(header, size) {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header ?? '');
  if (!match) return null;
  let start;
  let end;
  if (match[1] === '') {
    // A suffix: the last N bytes.
    start = Math.max(0, size - Number(match[2]));
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  }
  if (start > end || start >= size) return { unsatisfiable: true };
  return { start, end };
}

/** Starts the hub; resolves to { url, stats(), reset(), fault(file, kind, params), close() }. */
export async function hub({ repos = {}, generated = {}, redirect = true, hashes = true } = {}) {
  const stats = new Map();
  const faults = new Map();
  const hashCache = new Map();
  let cdnBase;

  const counter = (file) => {
    if (!stats.has(file)) stats.set(file, { bytes: 0, requests: 0, ranges: [] });
    return stats.get(file);
  };

  // Resolves a `owner/repo` + path to { size, read(start, end) }, or null.
  async function source(repo, path) {
    if (generated[repo]?.[path]) return generated[repo][path];
    const root = repos[repo] && resolve(repos[repo]);
    if (!root) return null;
    const file = normalize(join(root, path));
    if (!file.startsWith(root + '/')) return null;
    const info = await stat(file).catch(() => null);
    if (!info?.isFile()) return null;
    return {
      size: info.size,
      file,
      read: async (start, end) => {
        const handle = await open(file, 'r');
        try {
          const buffer = Buffer.alloc(end - start);
          await handle.read(buffer, 0, end - start, start);
          return buffer;
        } finally {
          await handle.close();
        }
      },
    };
  }

  /** Every file of a repository: [path, source]. */
  async function files(repo) {
    const listed = Object.keys(generated[repo] ?? {});
    const root = repos[repo] && resolve(repos[repo]);
    const walk = async (dir) => {
      for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const full = join(dir, entry.name);
        if (entry.isDirectory()) await walk(full);
        else listed.push(full.slice(root.length + 1));
      }
    };
    if (root) await walk(root);
    return Promise.all(listed.map(async (path) => [path, await source(repo, path)]));
  }

  async function sha256(key, src) {
    if (src.sha256) return src.sha256; // A generated file that knows its hash.
    if (!src.file) return null; // Other generated files: not worth hashing a gigabyte per test.
    if (!hashCache.has(key)) hashCache.set(key, createHash('sha256').update(await readFile(src.file)).digest('hex'));
    return hashCache.get(key);
  }

  const server = createServer(async (request, response) => {
    try {
      const url = new URL(request.url, 'http://x');
      if (request.method === 'OPTIONS') {
        response.writeHead(204, CORS).end();
        return;
      }
      if (url.pathname === '/__stats') {
        response.writeHead(200, { ...CORS, 'content-type': 'application/json' });
        response.end(JSON.stringify(Object.fromEntries(stats)));
        return;
      }
      if (url.pathname === '/__reset') {
        stats.clear();
        faults.clear();
        response.writeHead(200, CORS).end('{}');
        return;
      }
      if (url.pathname === '/__fault') {
        const params = Object.fromEntries(url.searchParams);
        faults.set(params.file, params);
        response.writeHead(200, CORS).end('{}');
        return;
      }
      const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(decodeURIComponent(url.pathname));
      if (api) {
        const [, repo, revision] = api;
        if (!repos[repo] && !generated[repo]) {
          response.writeHead(404, { ...CORS, 'content-type': 'application/json' }).end('{"error":"Repository not found"}');
          return;
        }
        const siblings = [];
        for (const [path, src] of await files(repo)) {
          const sibling = { rfilename: path, size: src.size };
          const hash = hashes && path.endsWith('.safetensors') ? await sha256(`${repo}/${path}`, src) : null;
          if (hash) sibling.lfs = { sha256: hash, size: src.size, pointerSize: 135 };
          siblings.push(sibling);
        }
        response.writeHead(200, { ...CORS, 'content-type': 'application/json' });
        response.end(JSON.stringify({ id: repo, sha: revision, siblings }));
        return;
      }
      // The CDN's own address for a file: `/__cdn/{owner}/{repo}/{path}`.
      const cdn = /^\/__cdn\/([^/]+\/[^/]+)\/(.+)$/.exec(decodeURIComponent(url.pathname));
      const match = cdn ? [null, cdn[1], null, cdn[2]] : /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(decodeURIComponent(url.pathname));
      const src = match && (await source(match[1], match[3]));
      if (!src) {
        response.writeHead(404, CORS).end('not found');
        return;
      }
      const key = `${match[1]}/${match[3]}`;
      const count = counter(key);
      const fault = faults.get(key);
      if (!cdn) {
        count.requests += 1;
        if (fault?.kind === 'http500') {
          faults.delete(key);
          response.writeHead(500, CORS).end('injected failure');
          return;
        }
      }
      const hash = hashes ? await sha256(key, src) : null;
      const linked = {
        'x-linked-size': String(src.size),
        ...(hash ? { 'x-linked-etag': `"${hash}"` } : {}),
      };
      if (redirect && !cdn && match[3].endsWith('.safetensors')) {
        // The Hub's answer for LFS files: the size and hash on the redirect, the bytes elsewhere.
        const target = `${cdnBase}/__cdn/${match[1]}/${encodeURI(match[3])}`;
        response.writeHead(302, { ...CORS, ...linked, location: target, 'cache-control': 'no-store' }).end();
        return;
      }
      const headers = {
        ...CORS,
        'content-type': 'application/octet-stream',
        'accept-ranges': 'bytes',
        'cache-control': 'no-store',
        ...(redirect ? {} : { ...linked, ...(hash ? { etag: `"${hash}"` } : {}) }),
      };
      const range = parseRange(request.headers.range, src.size);
      if (range?.unsatisfiable) {
        response.writeHead(416, { ...headers, 'content-range': `bytes */${src.size}` }).end();
        return;
      }
      const start = range ? range.start : 0;
      const end = range ? range.end + 1 : src.size;
      count.ranges.push(range ? `${start}-${end - 1}` : 'all');
      const status = range ? 206 : 200;
      response.writeHead(status, {
        ...headers,
        'content-length': String(end - start),
        ...(range ? { 'content-range': `bytes ${start}-${end - 1}/${src.size}` } : {}),
      });
      if (request.method === 'HEAD') {
        response.end();
        return;
      }
      if (fault) faults.delete(key);
      const piece = 256 << 10;
      let sent = 0;
      for (let offset = start; offset < end; offset += piece) {
        let buffer = await src.read(offset, Math.min(end, offset + piece));
        if (fault?.kind === 'corrupt') {
          const at = Number(fault.at) - offset;
          if (at >= 0 && at < buffer.length) {
            buffer = Buffer.from(buffer);
            buffer[at] ^= 0xff;
          }
        }
        if (fault?.kind === 'cut' && sent + buffer.length > Number(fault.at)) {
          const rest = Number(fault.at) - sent;
          if (rest > 0) await new Promise((done) => response.write(buffer.subarray(0, rest), done));
          count.bytes += rest;
          // A connection that stalls, then drops: the pause lets the browser read every byte
          // counted here before the body fails (a stream that errors discards what its reader
          // has not taken yet, and the count would depend on timing); the close is graceful
          // (FIN, not RST) for the same reason, and the body ends short of its Content-Length.
          await new Promise((done) => setTimeout(done, 2000));
          response.socket?.end();
          await new Promise((done) => setTimeout(done, 200));
          response.destroy();
          return;
        }
        if (fault?.kind === 'slow') {
          await new Promise((done) => setTimeout(done, (buffer.length / Number(fault.bps ?? 1e6)) * 1000));
        }
        sent += buffer.length;
        count.bytes += buffer.length;
        if (!response.write(buffer)) await new Promise((done) => response.once('drain', done));
        if (response.destroyed) return;
      }
      response.end();
    } catch (error) {
      if (!response.headersSent) response.writeHead(500, CORS);
      response.end(String(error));
    }
  });
  // The CDN: the same handler on a second port, so that the redirect crosses origins.
  const cdnServer = createServer((request, response) => server.emit('request', request, response));
  await new Promise((ready) => server.listen(0, '127.0.0.1', ready));
  await new Promise((ready) => cdnServer.listen(0, '127.0.0.1', ready));
  const { port } = server.address();
  const base = `http://127.0.0.1:${port}`;
  cdnBase = `http://127.0.0.1:${cdnServer.address().port}`;
  const post = (path) => fetch(`${base}${path}`, { method: 'POST' }).then((r) => r.json());
  return {
    url: base,
    stats: () => fetch(`${base}/__stats`).then((r) => r.json()),
    reset: () => post('/__reset'),
    fault: (file, kind, params = {}) => post(`/__fault?${new URLSearchParams({ file, kind, ...params })}`),
    close: () =>
      Promise.all(
        [server, cdnServer].map(
          (s) =>
            new Promise((done) => {
              s.closeAllConnections?.();
              s.close(done);
            }),
        ),
      ),
  };
}

/**
 * A safetensors file of `totalBytes` or a little more, generated on the fly: F32 tensors with
 * SD1.5-like sizes (the largest `largest` bytes), deterministic contents, never held whole.
 */
export function syntheticSafetensors(totalBytes, largest = 56 << 20) {
  const sizes = [largest, 12 << 20, 6_553_600, 2_359_296, 1_638_400, 655_360, 5120, 640];
  const header = {};
  let offset = 0;
  for (let i = 0; offset < totalBytes; i++) {
    const bytes = sizes[i % sizes.length];
    header[`blocks.${i}.weight`] = { dtype: 'F32', shape: [bytes / 4], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header));
  // safetensors pads the header with spaces to a multiple of 8.
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const head = Buffer.concat([prefix, json]);
  // The data repeats every 1024 bytes: small finite F32 values (the top byte is always 0x3c).
  const PERIOD = 1024;
  const pattern = Buffer.alloc(PERIOD + (4 << 20));
  for (let j = 0; j < pattern.length; j++) pattern[j] = j % 4 === 3 ? 0x3c : (j >> 2) & 0xff;
  return {
    size: head.length + offset,
    tensors: Object.keys(header).length,
    read: async (start, end) => {
      const buffer = Buffer.alloc(end - start);
      let i = start;
      for (; i < Math.min(end, head.length); i++) buffer[i - start] = head[i];
      while (i < end) {
        const data = i - head.length;
        const take = Math.min(end - i, 4 << 20);
        pattern.copy(buffer, i - start, data % PERIOD, (data % PERIOD) + take);
        i += take;
      }
      return buffer;
    },
  };
}
