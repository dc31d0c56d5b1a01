// `node tests/serve.mjs DIR [PORT]`: serves the built site (.ci/serve runs it) until Ctrl+C, with
// the end-to-end tests' static server.
import { serve } from './e2e/server.mjs';

const [root = 'dist', port = '8080'] = process.argv.slice(2);
const { url } = await serve(root, Number(port));
console.log(`serving ${root} on ${url}`);
