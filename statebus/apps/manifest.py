"""``statebus-app.json``: what an app is, who wrote it, and what it asks for. Parsed and checked, pure.

    manifest = Manifest.parse(raw_bytes)      InvalidBundle with the field and the reason
    manifest.permissions                      Grants: patterns in the user's namespace (and others')
    manifest.files()                          every bundle file the manifest names (handlers, schemas)

The shape (docs/apps.md, "The manifest")::

    {"name": "guestbook", "version": "1.0.0", "description": "…", "author": "<pubkey>",
     "permissions": {"read": [...], "write": [...], "read_others": [...]},
     "handlers": {"source": "server/handlers.js", "validate": {pattern: fn}, "derive": {key: fn},
                  "on_write": {pattern: fn}},
     "schemas": {pattern: "schemas/entry.json"}, "web": "web/"}

Rules:
    1. Unknown fields are refused (a typo must not silently ask for nothing), at every level.
    2. Every pattern is parsed with :meth:`statebus.apps.patterns.Pattern.parse` (``*`` for one
       segment, a trailing ``/`` for a subtree; no ``**``, ``..``, leading ``/`` or ``~``), so a
       manifest asking for something the sandbox cannot express is refused before anything is
       installed. That handler and schema patterns lie inside the write permission is checked when
       the bundle builds its :class:`~statebus.apps.spec.AppSpec` (:mod:`statebus.apps.bundle`).
    3. (The same rule at every level: fields are known, lists bounded, names plain identifiers.)
    4. File names the manifest gives are bundle paths (:func:`check_path`): relative, no ``..``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from statebus.apps.patterns import Grants, Pattern
from statebus.errors import InvalidBundle, InvalidValue
from statebus.keys import is_pubkey
from statebus.types import PubKey

MANIFEST_FILE = "statebus-app.json"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_PATTERNS = 64
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
FUNCTION_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}$")
_PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_PATH = 200
_TOP = {"name", "version", "description", "author", "permissions", "handlers", "schemas", "web"}
_PERMS = ("read", "write", "read_others", "send")
_HANDLERS = {"source", "validate", "derive", "on_write"}


def check_pattern(text: object, where: str) -> str:
    """A permission or handler pattern, parsed by :meth:`Pattern.parse` (rule 2)."""
    if not isinstance(text, str):
        raise InvalidBundle(f"{where}: a pattern is a string such as 'guestbook/entries/*'")
    try:
        return Pattern.parse(text).text
    except InvalidValue as exc:
        raise InvalidBundle(f"{where}: {exc.detail}") from None


def check_path(text: object, where: str) -> str:
    """A file path inside a bundle: relative, ``/``-separated segments of ``[A-Za-z0-9._-]``, no
    ``.``/``..``, at most 200 characters. Anything else could name a file outside the bundle."""
    if not isinstance(text, str) or not text:
        raise InvalidBundle(f"{where}: a bundle path is a non-empty string")
    if text.startswith("/") or "\\" in text or len(text) > MAX_PATH:
        raise InvalidBundle(
            f"{where}: {text[:60]!r} is not a relative bundle path (at most {MAX_PATH} chars)"
        )
    for seg in text.split("/"):
        if seg in ("", ".", "..") or not _PATH_SEGMENT_RE.match(seg):
            raise InvalidBundle(
                f"{where}: {text[:60]!r} has a bad segment {seg[:40]!r} "
                "(segments of [A-Za-z0-9._-], no '.' or '..')"
            )
    return text


def parse_permissions(value: object, where: str = "permissions") -> Grants:
    """The ``permissions`` object as :class:`Grants` (duplicates dropped, sorted)."""
    if not isinstance(value, dict):
        raise InvalidBundle(f"{where} is an object with read, write and read_others lists")
    extra = set(value) - set(_PERMS)
    if extra:
        raise InvalidBundle(f"{where} has unknown fields {sorted(extra)} (known: {', '.join(_PERMS)})")
    lists: dict[str, list[str]] = {}
    for kind in _PERMS:
        items = value.get(kind, [])
        if not isinstance(items, list) or len(items) > MAX_PATTERNS:
            raise InvalidBundle(f"{where}.{kind} is a list of at most {MAX_PATTERNS} patterns")
        lists[kind] = sorted({check_pattern(p, f"{where}.{kind}") for p in items})
    return Grants.parse(
        read=lists["read"], write=lists["write"], read_others=lists["read_others"], send=lists["send"]
    )


def permission_lines(grants: Grants) -> list[str]:
    """Grants as a person reads them (the install prompt, ``statebus app list``)."""
    out = [f"  read   your {p.text}" for p in grants.read]
    out += [f"  write  your {p.text}" for p in grants.write]
    out += [f"  read   other people's {p.text}" for p in grants.read_others]
    out += [f"  send   notices to other people's {p.text}" for p in grants.send]
    return out or ["  (no access to any key)"]


@dataclass(frozen=True, slots=True)
class Handlers:
    source: str
    validate: Mapping[str, str] = field(default_factory=dict)
    derive: Mapping[str, str] = field(default_factory=dict)
    on_write: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A checked ``statebus-app.json``."""

    name: str
    version: str
    description: str
    author: PubKey
    permissions: Grants
    handlers: Handlers | None = None
    schemas: Mapping[str, str] = field(default_factory=dict)
    web: str | None = None

    @classmethod
    def parse(cls, raw: bytes | str) -> Manifest:
        """Parse and check a manifest's text (every rule above).

        Raises:
            InvalidBundle: it is not JSON, or a field is missing, unknown or malformed; the detail
                names the field.
        """
        if len(raw) > MAX_MANIFEST_BYTES:
            raise InvalidBundle(f"{MANIFEST_FILE} is over {MAX_MANIFEST_BYTES} bytes")
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidBundle(f"{MANIFEST_FILE} is not JSON ({exc})") from None
        return cls.from_json(value)

    @classmethod
    def from_json(cls, value: Any) -> Manifest:
        if not isinstance(value, dict):
            raise InvalidBundle(f"{MANIFEST_FILE} is a JSON object")
        extra = set(value) - _TOP
        if extra:
            raise InvalidBundle(f"{MANIFEST_FILE} has unknown fields {sorted(extra)}")
        name = value.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidBundle(
                f"name {str(name)[:40]!r} is not 1-32 of [a-z0-9-] starting with a letter (it is also the "
                "app's subdomain)"
            )
        version = value.get("version")
        if not isinstance(version, str) or len(version) > 64 or not SEMVER_RE.match(version):
            raise InvalidBundle(f"version {str(version)[:40]!r} is not a semantic version (e.g. 1.0.0)")
        description = value.get("description", "")
        if not isinstance(description, str) or len(description) > 500:
            raise InvalidBundle("description is text of at most 500 characters")
        author = value.get("author")
        if not isinstance(author, str) or not is_pubkey(author):
            raise InvalidBundle("author is the author's public key (52 base32 characters)")
        if "permissions" not in value:
            raise InvalidBundle(f"{MANIFEST_FILE} has no permissions (write {{}} to ask for none)")
        perms = parse_permissions(value["permissions"])
        handlers = _handlers(value.get("handlers"))
        schemas = _schemas(value.get("schemas", {}))
        web = value.get("web")
        if web is not None:
            web = check_path(web.rstrip("/") if isinstance(web, str) else web, "web") + "/"
        return cls(name, version, description, author, perms, handlers, schemas, web)

    def files(self) -> list[str]:
        """The bundle files this manifest names (each must be in the bundle)."""
        out = [self.handlers.source] if self.handlers is not None else []
        return out + sorted(set(self.schemas.values()))


def _handlers(value: object) -> Handlers | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidBundle("handlers is an object with source, validate, derive and on_write")
    extra = set(value) - _HANDLERS
    if extra:
        raise InvalidBundle(f"handlers has unknown fields {sorted(extra)}")
    source = check_path(value.get("source"), "handlers.source")
    tables: dict[str, dict[str, str]] = {}
    for kind in ("validate", "derive", "on_write"):
        table = value.get(kind, {})
        if not isinstance(table, dict) or len(table) > MAX_PATTERNS:
            raise InvalidBundle(f"handlers.{kind} maps at most {MAX_PATTERNS} patterns to function names")
        for pattern, fn in table.items():
            check_pattern(pattern, f"handlers.{kind}")
            if not isinstance(fn, str) or not FUNCTION_RE.match(fn):
                raise InvalidBundle(f"handlers.{kind}[{pattern!r}] is a JavaScript function name")
        tables[kind] = dict(sorted(table.items()))
    return Handlers(source, tables["validate"], tables["derive"], tables["on_write"])


def _schemas(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_PATTERNS:
        raise InvalidBundle(f"schemas maps at most {MAX_PATTERNS} patterns to schema files")
    for pattern, path in value.items():
        check_pattern(pattern, "schemas")
        check_path(path, f"schemas[{pattern!r}]")
    return dict(sorted(value.items()))


__all__ = [
    "MANIFEST_FILE",
    "Handlers",
    "Manifest",
    "check_path",
    "check_pattern",
    "parse_permissions",
    "permission_lines",
]
