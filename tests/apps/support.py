"""What the hosted-apps tests share: the test app "gb" built as an AppSpec (no bundle code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from statebus.apps.patterns import Grants
from statebus.apps.spec import AppSpec

SOURCE = (Path(__file__).parent / "handlers.js").read_text()
ENTRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "by": {"type": "string", "maxLength": 64}},
    "required": ["text"],
}


def gb_spec(author: str, **overrides: Any) -> AppSpec:
    """The guestbook test app: validate + schema on entries, a derived count, an on_write."""
    fields: dict[str, Any] = {
        "grants": Grants.parse(read=["gb/"], write=["gb/"], read_others=["gb/"]),
        "handler_source": SOURCE,
        "validate": {"gb/entries/*": "validateEntry"},
        "derive": {"gb/count": "countEntries"},
        "on_write": {"gb/entries/*": "onEntry"},
        "schemas": {"gb/entries/*": ENTRY_SCHEMA},
    }
    fields.update(overrides)
    return AppSpec("gb", "1.0.0", "sha256-test", author, **fields)
