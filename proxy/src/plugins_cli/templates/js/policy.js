// {{name}}: a wharf access policy. It allows everything and logs each request; put your rules in
// `access.check`. The interface is wit/policy.wit (what each call means: wharf's wit/README.md).

import { log } from 'wharf:policy/log@0.1.0';

// The `config` string of the plugin's [[plugin]] entry, kept by init, which wharf calls once per
// instance before any other call.
let config = null;

export const lifecycle = {
  init(text) {
    // Parse and check the config here; `throw 'why'` stops wharf from starting and shows why.
    config = text;
    log('info', '{{name}} ready', [['config', text]]);
  },
};

export const access = {
  check(request) {
    if (config === null) {
      throw 'check called before init';
    }
    const name = request.registry === undefined
      ? request.repository
      : `${request.registry}/${request.repository}`;
    log('debug', 'checked', [['operation', request.operation], ['name', name]]);
    // `{ tag: 'deny', val: reason }` refuses the request (the client sees the reason); throwing is a
    // failure of the plugin, not a decision.
    return { tag: 'allow' };
  },
};
