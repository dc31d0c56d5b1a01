// A static file server for the built site, on 127.0.0.1 and a free port.
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, resolve } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.webmanifest': 'application/manifest+json',
};

/** The file a path names under `root`, or null (outside it, or not there). */
async function find(root, path) {
  let file = normalize(join(root, path));
  if (!file.startsWith(root)) return null;
  const found = await stat(file).catch(() => null);
  if (found?.isDirectory()) file = join(file, 'index.html');
  else if (!found) return null;
  return file;
}

/**
 * Serves `root` (or several folders, the first that holds a path answering it) on `port` (0: a
 * free one); resolves to { url, close }.
 */
export async function serve(root, port = 0) {
  const roots = [root].flat().map((folder) => resolve(folder));
  const server = createServer(async (request, response) => {
    try {
      const path = decodeURIComponent(new URL(request.url, 'http://x').pathname);
      let file = null;
      for (const folder of roots) file ??= await find(folder, path);
      if (!file) throw new Error('not found');
      const body = await readFile(file);
      response.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'cache-control': 'no-store',
      });
      response.end(body);
    } catch {
      response.writeHead(404).end('not found');
    }
  });
  await new Promise((ready) => server.listen(port, '127.0.0.1', ready));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () => new Promise((done) => server.close(done)),
  };
}
