// Writes the service worker's precache list into DIST/sw.js: every file of the build (the app
// shell and the site's own models) and the build's name, the first 16 hex digits of a SHA-256
// over their names and bytes — so a changed file makes a new build, a new cache, and the
// "new version" prompt. Usage: node .ci/precache.mjs DIST
import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';

const dist = process.argv[2];
// The service worker itself is not precached (the browser keeps it); .map files are not shipped.
const skip = (file) => file === 'sw.js';

async function files(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await files(path)));
    else out.push(relative(dist, path).split(sep).join('/'));
  }
  return out;
}

const list = (await files(dist)).filter((file) => !skip(file)).sort();
const hash = createHash('sha256');
for (const file of list) {
  hash.update(file);
  hash.update('\0');
  hash.update(await readFile(join(dist, file)));
}
const build = hash.digest('hex').slice(0, 16);
const sw = join(dist, 'sw.js');
const source = await readFile(sw, 'utf8');
const line = "const PRECACHE = { build: 'unbuilt', files: [] };";
if (!source.includes(line)) throw new Error(`${sw} has no PRECACHE line to fill in`);
await writeFile(sw, source.replace(line, `const PRECACHE = ${JSON.stringify({ build, files: list })};`));
console.log(`service worker: build ${build}, ${list.length} files precached`);
