"""An example wharf access policy in Python (componentize-py), world `access-policy`.

Config: {"deny": ["prefix", ...]}. A request is denied when the name it is judged by starts with one of
the prefixes; everything else is allowed. The name is `<registry>/<repository>` for mirrored content
(`docker.io/library/redis`) and `<repository>` for wharf's own repositories (`team/app`), as in the
Rust allow-list plugin (which also has globs, an allow list and an operation filter).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types

# Set by init, which wharf calls once per instance before any check.
_prefixes: list[str] | None = None

_EXAMPLE = '{"deny": ["docker.io/library/redis", "team/secret-"]}'


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global _prefixes
        try:
            parsed = json.loads(config)
        except ValueError as e:
            raise Err(f"python example: invalid config ({e}); expected e.g. {_EXAMPLE}")
        if not isinstance(parsed, dict) or set(parsed) != {"deny"}:
            raise Err(f"python example: the config must be an object with one key, `deny`; e.g. {_EXAMPLE}")
        deny = parsed["deny"]
        if not isinstance(deny, list) or not deny or not all(isinstance(p, str) and p for p in deny):
            raise Err(f"python example: `deny` must be a non-empty list of non-empty strings; e.g. {_EXAMPLE}")
        _prefixes = deny
        log.log(log.Level.INFO, "python example ready", [("deny_prefixes", str(len(deny)))])


class Access(exports.Access):
    def check(self, request: types.Request) -> types.Decision:
        if _prefixes is None:
            raise Err("python example: check called before init")
        name = request.repository if request.registry is None else f"{request.registry}/{request.repository}"
        for prefix in _prefixes:
            if name.startswith(prefix):
                return types.Decision_Deny(f'{name} is denied by prefix "{prefix}" (python example plugin)')
        return types.Decision_Allow()
