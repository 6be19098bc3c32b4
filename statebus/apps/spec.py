"""What the node needs to run one installed app: :class:`AppSpec`.

The bundle code (:mod:`statebus.apps.registry`) builds it from a verified bundle and the owner's
grant; tests build it directly. :class:`~statebus.apps.handlers.AppHost` runs it.

Rules:

1. A spec is checked when it is made (:meth:`AppSpec.check`): a valid name, patterns that parse, every
   handler name a plain JS identifier, validate/on_write/schema patterns inside the write grant,
   derive keys relative paths inside the write grant, no handler without a source.
2. A spec is immutable; loading a new one replaces the app's sandbox whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from statebus.apps.patterns import Grants, Pattern
from statebus.errors import InvalidValue
from statebus.types import PubKey

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
FUNCTION_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}$")
MAX_SOURCE_BYTES = 1 << 20


@dataclass(frozen=True)
class AppSpec:
    """One app as the node runs it (rule 1). ``handler_source`` is the JS text of the handlers, or
    None; ``validate`` and ``on_write`` map a pattern to a function name, ``derive`` maps a derived
    key (a relative path) to a function name, ``schemas`` map a pattern to a parsed JSON Schema.
    ``wasm`` is a raw-wasm handler module (bytes or WAT text) speaking the JSON ABI, used instead of
    ``handler_source`` (docs/apps.md)."""

    name: str
    version: str
    bundle_hash: str
    author: PubKey
    grants: Grants
    handler_source: str | None = None
    validate: Mapping[str, str] = field(default_factory=dict)
    derive: Mapping[str, str] = field(default_factory=dict)
    on_write: Mapping[str, str] = field(default_factory=dict)
    schemas: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    wasm: bytes | str | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`InvalidValue` unless the spec keeps rule 1."""
        if not NAME_RE.match(self.name):
            raise InvalidValue(f"app name {self.name!r} must match {NAME_RE.pattern}")
        if self.handler_source is not None and len(self.handler_source.encode("utf-8")) > MAX_SOURCE_BYTES:
            raise InvalidValue(f"app {self.name}: handlers source is over {MAX_SOURCE_BYTES} bytes")
        if self.handler_source is not None and self.wasm is not None:
            raise InvalidValue(f"app {self.name}: handlers are JS source or a wasm module, not both")
        code = self.handler_source is not None or self.wasm is not None
        for kind, table in (
            ("validate", self.validate),
            ("on_write", self.on_write),
            ("derive", self.derive),
        ):
            if table and not code:
                raise InvalidValue(f"app {self.name}: {kind} handlers need a handlers source")
            for pattern, fn in table.items():
                p = Pattern.parse(pattern)
                if not FUNCTION_RE.match(fn):
                    raise InvalidValue(f"app {self.name}: {fn!r} is not a plain function name")
                if kind == "derive" and ("*" in p.parts or p.subtree):
                    raise InvalidValue(
                        f"app {self.name}: derived key {pattern!r} must be one key (no '*', no '/')"
                    )
                self._inside_write(kind, p)
        for pattern, schema in self.schemas.items():
            self._inside_write("schemas", Pattern.parse(pattern))
            if not isinstance(schema, Mapping):
                raise InvalidValue(f"app {self.name}: the schema for {pattern!r} is not a JSON object")

    def _inside_write(self, kind: str, p: Pattern) -> None:
        probe = "/".join("x" if s == "*" else s for s in p.parts) + ("/x" if p.subtree else "")
        if not self.grants.can_write(probe):
            raise InvalidValue(f"app {self.name}: {kind} pattern {p.text!r} lies outside its write grant")
