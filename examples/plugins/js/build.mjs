// Builds policy.js into the component policy.wasm (world `access-policy` of wharf's WIT).
// Usage: `npm ci && node build.mjs [OUT.wasm]` (plugins/build.sh does both). Called from a script
// rather than `jco componentize` because the CLI path was unreliable with this componentize-js.

import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, 'policy.wasm'));

const { component } = await componentize({
  sourcePath: join(here, 'policy.js'),
  witPath: join(here, '..', '..', '..', 'wit'),
  worldName: 'access-policy',
  // A policy needs none of these, and without them the component imports no WASI at all: only
  // wharf's `log`.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`${out}: ${component.length} bytes`);
