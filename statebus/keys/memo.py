"""A memo of parsed keys: the one place a node remembers what :func:`parse_key` gave.

Rules:

1. :meth:`KeyMemo.parse` returns exactly what :func:`parse_key` returns for the same text and the
   memo's local namespace, and raises the same error: a key that parsed once parses to the same
   result again (``parse_key`` is a pure function of the text, ``local`` and ``allow_subtree``).
2. Only valid keys given as exact ``str`` objects are remembered (a subclass could compare or hash
   differently); an invalid key is parsed, and refused, every time.
3. The memo holds at most :data:`PARSED_KEYS` keys, then it starts over.
"""

from __future__ import annotations

from statebus.keys.paths import parse_key
from statebus.types import Key, PubKey

PARSED_KEYS = 4096
"""Most keys a :class:`KeyMemo` remembers (then it starts over)."""


class KeyMemo:
    """``parse_key(text, local, allow_subtree=...)``, remembered for the most recent valid keys.

    >>> memo = KeyMemo("a" * 51 + "q")
    >>> memo.parse("/~/x/") == "/" + "a" * 51 + "q/x/"
    True
    """

    __slots__ = ("_parsed", "local")

    def __init__(self, local: PubKey) -> None:
        self.local = local
        self._parsed: dict[str, Key] = {}

    def __len__(self) -> int:
        return len(self._parsed)

    def __contains__(self, text: object) -> bool:
        return text in self._parsed

    def parse(self, text: str, *, allow_subtree: bool = True) -> Key:
        """The normal form of the key or subtree ``text`` (a subtree only with ``allow_subtree``).
        Raises InvalidKey (rule 1)."""
        found = self._parsed.get(text) if type(text) is str else None
        if found is not None and (allow_subtree or found[-1] != "/"):
            return found
        return self._parse(text, allow_subtree)

    def parse_one(self, text: str) -> Key:
        """``parse(text, allow_subtree=False)``: one key, not a subtree (what a write names)."""
        found = self._parsed.get(text) if type(text) is str else None
        if found is not None and found[-1] != "/":
            return found
        return self._parse(text, False)

    def _parse(self, text: str, allow_subtree: bool) -> Key:
        key = parse_key(text, self.local, allow_subtree=allow_subtree)  # an invalid key raises here
        if type(text) is str:
            if len(self._parsed) >= PARSED_KEYS:
                self._parsed.clear()
            self._parsed[text] = key
        return key
