"""Key patterns of a hosted app, relative to a namespace, and the grants built from them.

    p = Pattern.parse("guestbook/entries/*")
    p.matches("guestbook/entries/42")            # True: ``*`` is exactly one segment
    Pattern.parse("guestbook/").matches("guestbook/a/b")   # True: a trailing ``/`` is the subtree
    grants = Grants.parse(read=["guestbook/"], write=["guestbook/entries/*"], read_others=["guestbook/"])
    grants.can_read(namespace_is_own=False, rel_path="guestbook/count")   # True (read_others)

Rules:

1. A pattern is a relative path: segments separated by ``/``; ``*`` matches exactly one segment; a
   trailing ``/`` means "this subtree" (every key strictly below it). No ``**``, no ``..`` or ``.``
   segment, no leading ``/``, no ``~``, no empty segment, no ``*`` inside a segment (``a*``).
2. A relative path (what a pattern is matched against) is a key with its ``/<namespace>/`` cut off:
   never empty, no leading or trailing ``/``.
3. Grants never widen: ``write`` implies nothing about other namespaces; ``read_others`` is read only;
   ``send`` only hands a small signed notice to the node's courier for another namespace's owner
   (it writes nothing here, and the receiving node decides whether to take it). A key outside every
   pattern is outside the grant.

Pure: no I/O; it imports only :mod:`statebus.errors`, :mod:`statebus.keys` and :mod:`statebus.types`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from statebus.errors import InvalidValue
from statebus.keys import namespace_of
from statebus.keys.paths import PUBKEY_CHARS
from statebus.types import Key, PubKey

MAX_PATTERN_CHARS = 256
MAX_PATTERNS = 64


@dataclass(frozen=True, slots=True)
class Pattern:
    """One parsed pattern (rule 1)."""

    text: str
    parts: tuple[str, ...]
    subtree: bool

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Parse ``text``.

        Raises:
            InvalidValue: the text breaks rule 1 (the detail says how).
        """
        if not isinstance(text, str) or not text:
            raise InvalidValue("a pattern is a non-empty relative path such as 'guestbook/entries/*'")
        if len(text) > MAX_PATTERN_CHARS:
            raise InvalidValue(f"a pattern is at most {MAX_PATTERN_CHARS} characters")
        if text.startswith("/"):
            raise InvalidValue(f"pattern {text!r}: patterns are relative to the namespace (no leading '/')")
        if "~" in text:
            raise InvalidValue(f"pattern {text!r}: '~' is not allowed (patterns are already relative)")
        subtree = text.endswith("/")
        parts = tuple(text[:-1].split("/") if subtree else text.split("/"))
        for part in parts:
            if part == "":
                raise InvalidValue(f"pattern {text!r} has an empty segment")
            if part in (".", ".."):
                raise InvalidValue(f"pattern {text!r}: '.' and '..' segments are not allowed")
            if part == "**" or ("*" in part and part != "*"):
                raise InvalidValue(
                    f"pattern {text!r}: '*' stands alone for one segment ('**' is not allowed)"
                )
            if any(ord(c) < 0x20 or c == "\\" for c in part):
                raise InvalidValue(f"pattern {text!r} holds a control character or backslash")
        return cls(text, parts, subtree)

    def matches(self, rel_path: str) -> bool:
        """Does the relative path ``rel_path`` (rule 2) fall under this pattern?"""
        segs = rel_path.split("/")
        n = len(self.parts)
        if self.subtree:
            if len(segs) <= n:
                return False
        elif len(segs) != n:
            return False
        return all(p == "*" or p == s for p, s in zip(self.parts, segs, strict=False))

    def __str__(self) -> str:
        return self.text


def parse_patterns(texts: Iterable[str], what: str = "patterns") -> tuple[Pattern, ...]:
    """Parse a list of pattern texts (at most :data:`MAX_PATTERNS`)."""
    if isinstance(texts, str):
        raise InvalidValue(f"{what} is a list of patterns, not one string")
    out = tuple(Pattern.parse(t) for t in texts)
    if len(out) > MAX_PATTERNS:
        raise InvalidValue(f"{what}: at most {MAX_PATTERNS} patterns")
    return out


def split_key(key: Key) -> tuple[PubKey, str]:
    """A (validated, non-subtree) key as its namespace and its relative path (rule 2)."""
    return namespace_of(key), key[2 + PUBKEY_CHARS :]


def matches_any(patterns: Iterable[Pattern], rel_path: str) -> bool:
    return any(p.matches(rel_path) for p in patterns)


@dataclass(frozen=True, slots=True)
class Grants:
    """What an app may touch: ``read`` and ``write`` in the user's own namespace, ``read_others``
    in every other namespace, ``send`` notices to other namespaces (rule 3)."""

    read: tuple[Pattern, ...] = ()
    write: tuple[Pattern, ...] = ()
    read_others: tuple[Pattern, ...] = ()
    send: tuple[Pattern, ...] = ()

    @classmethod
    def parse(
        cls,
        *,
        read: Iterable[str] = (),
        write: Iterable[str] = (),
        read_others: Iterable[str] = (),
        send: Iterable[str] = (),
    ) -> Grants:
        return cls(
            parse_patterns(read, "read"),
            parse_patterns(write, "write"),
            parse_patterns(read_others, "read_others"),
            parse_patterns(send, "send"),
        )

    @classmethod
    def from_json(cls, data: object) -> Grants:
        """From the manifest's ``permissions`` object (lists ``read``, ``write``, ``read_others``,
        ``send``)."""
        if not isinstance(data, dict):
            raise InvalidValue("permissions is an object with 'read', 'write' and 'read_others' lists")
        unknown = set(data) - {"read", "write", "read_others", "send"}
        if unknown:
            raise InvalidValue(f"permissions: unknown field {sorted(unknown)[0]!r}")
        return cls.parse(
            read=data.get("read", []),
            write=data.get("write", []),
            read_others=data.get("read_others", []),
            send=data.get("send", []),
        )

    def to_json(self) -> dict[str, list[str]]:
        out = {
            "read": [p.text for p in self.read],
            "write": [p.text for p in self.write],
            "read_others": [p.text for p in self.read_others],
        }
        if self.send:  # absent when empty: grants stored before ``send`` existed read the same
            out["send"] = [p.text for p in self.send]
        return out

    def can_read(self, namespace_is_own: bool, rel_path: str) -> bool:
        """May the app read ``rel_path`` in the user's namespace (``namespace_is_own``) or another's?
        Whatever it may write in its own namespace, it may also read."""
        if namespace_is_own:
            return matches_any(self.read, rel_path) or matches_any(self.write, rel_path)
        return matches_any(self.read_others, rel_path)

    def can_write(self, rel_path: str) -> bool:
        """May the app write ``rel_path`` in the user's own namespace? (Never in another's.)"""
        return matches_any(self.write, rel_path)

    def can_send(self, rel_path: str) -> bool:
        """May the app send a notice to ``rel_path`` in another namespace (rule 3)?"""
        return matches_any(self.send, rel_path)

    def covers(self, other: Grants) -> bool:
        """Does every pattern of ``other`` appear in this grant (an upgrade asking nothing new)?"""
        return (
            {p.text for p in other.read} <= {p.text for p in self.read}
            and {p.text for p in other.write} <= {p.text for p in self.write}
            and {p.text for p in other.read_others} <= {p.text for p in self.read_others}
            and {p.text for p in other.send} <= {p.text for p in self.send}
        )
