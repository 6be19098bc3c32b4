"""The headers that make a served value data, never code running in the node's origin.

A value's content type is chosen by whoever wrote it: the owner, a stranger with an ACL write grant,
a delegate, or a peer the node follows (its ops are replicated here and served from this origin).
Served inline as ``text/html`` or ``image/svg+xml``, a planted page would run script as the owner,
with the owner's cookie. So every answer that carries a value's bytes says:

* ``X-Content-Type-Options: nosniff`` (JSON and listings too): the browser uses the declared type and
  never guesses a document out of bytes;
* ``Content-Security-Policy: sandbox`` on every value that is not JSON: a document rendered from it
  gets an opaque origin (no cookies, no storage, no same-origin reads) and runs no script, submits no
  form and opens no window;
* ``Content-Disposition: attachment`` on every type a browser may render as a document or that can
  script (HTML, XHTML, SVG, XML, PDF, JavaScript, anything unknown): the browser downloads it
  instead of opening it. Only :data:`INLINE_TYPES` (plain text, raster images, audio, video) are
  shown inline. A reader who wants to look at an active value asks for the sandboxed view
  (``?view``): inline, still under ``sandbox``.

A content type that is not a well-formed ``type/subtype[; params]`` header value (a signed op may
carry any short string) is served as ``application/octet-stream``, as an attachment.

The node's own page (``/``) gets :data:`PAGE_HEADERS`: a policy that runs only its own script files and
lets no other site frame it. Pages meant to run (apps) get an origin of their own (see DESIGN.md,
"Hosted apps"), never this one.
"""

from __future__ import annotations

import re
from typing import Final

NOSNIFF: Final = ("x-content-type-options", "nosniff")
SANDBOX: Final = ("content-security-policy", "sandbox")
ATTACHMENT: Final = ("content-disposition", "attachment")
FALLBACK_TYPE: Final = "application/octet-stream"
VIEW_PARAM: Final = "view"
"""The query parameter that asks for the sandboxed inline view of an active value (``?view``)."""

PAGE_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The node's own page (``/``): its scripts and styles come from its files only, and no other site
may frame it."""
PAGE_HEADERS: Final = (("content-security-policy", PAGE_POLICY), NOSNIFF)

INLINE_TYPES: Final = frozenset(
    {
        "text/plain",
        "text/csv",
        "text/markdown",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "application/json",
    }
)
"""Types a browser shows as inert data (no document that can script), served inline."""
INLINE_FAMILIES: Final = ("audio/", "video/")
"""Whole families served inline: the browser plays them in its media viewer."""

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_PARAMS = re.compile(r"[\x20-\x7e\t]*")


def media_type_of(content_type: str) -> str | None:
    """The lowercased ``type/subtype`` of a content type header value, or None when it is not one."""
    essence, _, params = content_type.partition(";")
    match = _MEDIA_TYPE.fullmatch(essence.strip())
    if match is None or _PARAMS.fullmatch(params) is None:
        return None
    return match.group(0).lower()


def served_type(content_type: str) -> str:
    """The ``Content-Type`` to send for a stored value's type: itself when it is a well-formed header
    value, else :data:`FALLBACK_TYPE` (so no stored string can break or add a header)."""
    return content_type.strip() if media_type_of(content_type) is not None else FALLBACK_TYPE


def is_inline(content_type: str) -> bool:
    """True when a value of this type may be shown inline: it is inert data in every browser."""
    media = media_type_of(content_type)
    if media is None:
        return False
    return media in INLINE_TYPES or media.startswith(INLINE_FAMILIES)


def value_headers(content_type: str | None, *, view: bool = False) -> list[tuple[str, str]]:
    """The headers that keep a value data (see the module docstring).

    Args:
        content_type: the value's stored content type; None for a JSON value (or a listing).
        view: the reader asked for the sandboxed inline view (``?view``).
    """
    if content_type is None:
        return [NOSNIFF]
    out = [NOSNIFF, SANDBOX]
    if not view and not is_inline(content_type):
        out.append(ATTACHMENT)
    return out


def raw_value_headers(content_type: str | None, *, view: bool = False) -> list[tuple[bytes, bytes]]:
    """:func:`value_headers` as raw ASGI header pairs."""
    return [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in value_headers(content_type, view=view)
    ]


__all__ = [
    "ATTACHMENT",
    "FALLBACK_TYPE",
    "INLINE_FAMILIES",
    "INLINE_TYPES",
    "NOSNIFF",
    "PAGE_HEADERS",
    "PAGE_POLICY",
    "SANDBOX",
    "VIEW_PARAM",
    "is_inline",
    "media_type_of",
    "raw_value_headers",
    "served_type",
    "value_headers",
]
