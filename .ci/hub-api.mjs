// Writes the Hub's JSON API answer for every repository the site serves in the Hub's layout
// (`HUB/{owner}/{name}/resolve/{revision}/…` → `HUB/api/models/{owner}/{name}/revision/{revision}`):
// each file's size, and for weights their SHA-256 as the Hub names LFS files' — so that the page
// verifies the site's own models as it verifies the Hub's (web/src/download.rs, `repo_files`).
// Usage: node .ci/hub-api.mjs DIST/hub
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

const hub = process.argv[2];
const list = async (dir) => (await readdir(dir, { withFileTypes: true }).catch(() => []));

async function files(dir) {
  const out = [];
  for (const entry of await list(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await files(path)));
    else out.push(path);
  }
  return out;
}

for (const owner of await list(hub)) {
  if (!owner.isDirectory() || owner.name === 'api') continue;
  for (const name of await list(join(hub, owner.name))) {
    for (const revision of await list(join(hub, owner.name, name.name, 'resolve'))) {
      const root = join(hub, owner.name, name.name, 'resolve', revision.name);
      const siblings = [];
      for (const path of (await files(root)).sort()) {
        const bytes = await readFile(path);
        const sibling = { rfilename: relative(root, path), size: bytes.length };
        if (path.endsWith('.safetensors')) {
          sibling.lfs = { sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
        }
        siblings.push(sibling);
      }
      const api = join(hub, 'api', 'models', owner.name, name.name, 'revision');
      await mkdir(api, { recursive: true });
      await writeFile(join(api, revision.name), JSON.stringify({ id: `${owner.name}/${name.name}`, sha: revision.name, siblings }));
      console.log(`${owner.name}/${name.name}@${revision.name}: ${siblings.length} files`);
    }
  }
}
