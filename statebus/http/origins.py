"""Which web origins are this node's own: for the websocket handshake, cookie writes and the cookie's name.

A browser sends ``Origin`` with every websocket handshake and every request that is not a ``GET`` or
``HEAD`` (and ``Sec-Fetch-Site`` on every request). The node's own origins are the one in the request
itself (its scheme and ``Host`` header: the address the browser typed, such as
``http://127.0.0.1:8765`` or ``http://localhost:8765``), those configured in
``settings.public_origins`` (``https://node.example.org`` behind a TLS proxy), and those that
``settings.public_addresses`` name (``host:443`` is ``https://host``, any other ``host:port`` is
``http://host:port``). A page on any other origin, another port of the same host included, is a
different site's page.

A request without ``Origin`` and without ``Sec-Fetch-Site`` does not come from a browser's page (curl,
the CLI, a peer node): it is not cross-origin, and its own credentials (token, signature) decide.

A DNS-rebinding page (``attacker.example`` resolved to 127.0.0.1) sends an ``Origin`` that matches its
``Host``, so it passes this check; it gets no cookie of the node's origin, so it is anonymous.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from statebus.config import Settings

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
WEB_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_ORIGIN_FETCH: Final = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values of a request the user or the node's own page made."""


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` in lowercase without a default port, or None (``null``, a path,
    credentials, anything but http(s) and ws(s))."""
    text = text.strip()
    if not text or len(text) > 300:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = WEB_SCHEMES.get(parts.scheme.lower())
    host = parts.hostname
    if scheme is None or not host or parts.username is not None or parts.password is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"
    return (
        f"{scheme}://{host}" if port is None or port == DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"
    )


def address_origins(addresses: Iterable[str]) -> list[str]:
    """The web origins of ``host:port`` addresses: port 443 is ``https://host``, others plain http."""
    out = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        out.append(f"https://{host}" if port == "443" else f"http://{address}")
    return out


class OriginPolicy:
    """The node's own origins: the request's and ``configured`` (``settings.public_origins``).

    Args:
        configured: origins such as ``https://node.example.org`` (already checked by the settings).
    """

    def __init__(self, configured: Iterable[str] = ()) -> None:
        self.configured = frozenset(o for o in (normalize_origin(c) for c in configured) if o is not None)

    @classmethod
    def of(cls, settings: Settings) -> OriginPolicy:
        """The policy of a node: ``public_origins``, and the origins ``public_addresses`` name."""
        return cls([*settings.public_origins, *address_origins(settings.public_addresses)])

    def request_origin(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
        """The origin the request was addressed to (its scheme and ``Host``), normalized."""
        scheme = WEB_SCHEMES.get(str(scope.get("scheme", "http")), "http")
        host = headers.get("host", "")
        return normalize_origin(f"{scheme}://{host}") if host else None

    def is_own(self, origin: str, scope: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
        """Whether ``origin`` (an ``Origin`` header) is one of this node's."""
        got = normalize_origin(origin)
        return got is not None and (got in self.configured or got == self.request_origin(scope, headers))

    def foreign_origin(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
        """Whether the request comes from another origin's page: its ``Origin`` is not the node's,
        or (without ``Origin``) its ``Sec-Fetch-Site`` says another site or origin."""
        origin = headers.get("origin")
        if origin is not None:
            return not self.is_own(origin, scope, headers)
        site = headers.get("sec-fetch-site")
        return site is not None and site.strip().lower() not in SAME_ORIGIN_FETCH

    def is_secure(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
        """Whether the browser reaches the node over TLS here: an https (wss) request, or a ``Host``
        that a configured ``https://`` origin names (a TLS proxy in front of plain HTTP), or one label
        below it (an app's origin, ``<name>.<public host>``)."""
        if WEB_SCHEMES.get(str(scope.get("scheme", "http"))) == "https":
            return True
        host = headers.get("host", "") if self.configured else ""
        if not host:
            return False
        if normalize_origin(f"https://{host}") in self.configured:
            return True
        # an installed app's origin, <name>.<public host>, is as secure as the public host
        _, dot, parent = host.partition(".")
        return bool(dot) and normalize_origin(f"https://{parent}") in self.configured
