// Builds policy.js into a component (world `access-policy` of wit/policy.wit).
// Usage: `npm install && node build.mjs [OUT.wasm]`.

import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, '{{name}}.wasm'));

const { component } = await componentize({
  sourcePath: join(here, 'policy.js'),
  witPath: join(here, 'wit'),
  worldName: 'access-policy',
  // Without these optional engine features the component imports no WASI at all, only wharf's `log`
  // (console.log then goes nowhere: use `log`).
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`${out}: ${component.length} bytes`);
