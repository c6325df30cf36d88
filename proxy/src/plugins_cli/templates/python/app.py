"""{{name}}: a wharf access policy. It allows everything and logs each request; put your rules in
`Access.check`. The interface is wit/policy.wit (what each call means: wharf's wit/README.md)."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types

# The `config` string of the plugin's [[plugin]] entry, kept by init, which wharf calls once per
# instance before any other call.
_config: str | None = None


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global _config
        # Parse and check the config here; `raise Err("why")` stops wharf from starting and shows why.
        _config = config
        log.log(log.Level.INFO, "{{name}} ready", [("config", config)])


class Access(exports.Access):
    def check(self, request: types.Request) -> types.Decision:
        if _config is None:
            raise Err("check called before init")
        name = request.repository if request.registry is None else f"{request.registry}/{request.repository}"
        log.log(log.Level.DEBUG, "checked", [("operation", request.operation.name.lower()), ("name", name)])
        # types.Decision_Deny(reason) refuses the request (the client sees the reason); raising Err is a
        # failure of the plugin, not a decision.
        return types.Decision_Allow()
