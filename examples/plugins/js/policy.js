// An example wharf access policy in JavaScript (componentize-js), world `access-policy`.
//
// Config: {"deny": ["prefix", ...]}. A request is denied when the name it is judged by starts with one
// of the prefixes; everything else is allowed. The name is `<registry>/<repository>` for mirrored content
// (`docker.io/library/redis`) and `<repository>` for wharf's own repositories (`team/app`), as in the
// Rust allow-list plugin (which also has globs, an allow list and an operation filter).
//
// Calling conventions (componentize-js): a `result` export returns its ok value and throws its err
// value (throw a string, not an Error, since the err type is `string`); an `option` is the value or
// `undefined`; a variant is `{ tag, val }`; enums are their names as strings.

import { log } from 'wharf:policy/log@0.1.0';

const EXAMPLE = '{"deny": ["docker.io/library/redis", "team/secret-"]}';

// Set by init, which wharf calls once per instance before any check.
let prefixes = null;

export const lifecycle = {
  init(config) {
    let parsed;
    try {
      parsed = JSON.parse(config);
    } catch (e) {
      throw `js example: invalid config (${e.message}); expected e.g. ${EXAMPLE}`;
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)
        || Object.keys(parsed).join() !== 'deny') {
      throw `js example: the config must be an object with one key, \`deny\`; e.g. ${EXAMPLE}`;
    }
    const deny = parsed.deny;
    if (!Array.isArray(deny) || deny.length === 0 || !deny.every((p) => typeof p === 'string' && p !== '')) {
      throw `js example: \`deny\` must be a non-empty list of non-empty strings; e.g. ${EXAMPLE}`;
    }
    prefixes = deny;
    log('info', 'js example ready', [['deny_prefixes', String(deny.length)]]);
  },
};

export const access = {
  check(request) {
    if (prefixes === null) {
      throw 'js example: check called before init';
    }
    const name = request.registry === undefined
      ? request.repository
      : `${request.registry}/${request.repository}`;
    const prefix = prefixes.find((p) => name.startsWith(p));
    if (prefix !== undefined) {
      return { tag: 'deny', val: `${name} is denied by prefix "${prefix}" (js example plugin)` };
    }
    return { tag: 'allow' };
  },
};
