"""Who signed a request: RFC 9421 verification with replay protection and an authority check.

:class:`RequestVerifier` wraps :func:`statebus.identity.httpsig.verify_request` with the node's policy:

* the URL is rebuilt from the ASGI scope (:func:`asgi_target_uri`), and its authority (``Host``) must
  be one of the node's own: the address the connection reached (``scope["server"]``, also as
  ``localhost`` on loopback) or one of ``settings.public_addresses``; a request signed for another
  node cannot be replayed here;
* ``created`` must be within ``max_age`` seconds, and at most ``max_skew`` seconds ahead (the signer's
  clock may run ahead of ours: ``settings.max_clock_skew``, two minutes by default);
* each ``(keyid, nonce)`` is remembered for ``max_age + max_skew`` (as long as its signature is
  accepted: a future ``created`` stays fresh that much longer) in a bounded :class:`NonceStore`; a nonce seen
  before is a replay. When the store is full of live nonces, new signed requests get 429 rather than
  forgetting one early (which would let it be replayed).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from statebus.errors import BadSignature, RateLimited
from statebus.identity.httpsig import MAX_SKEW, asgi_target_uri, verify_request
from statebus.types import PubKey

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class NonceStore:
    """Nonces seen in the last ``max_age`` seconds, at most ``max_entries`` of them. Thread-safe."""

    def __init__(self, max_age: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, pubkey: PubKey, nonce: str) -> bool:
        """True if ``(pubkey, nonce)`` was seen within ``max_age``; otherwise record it and return False.

        Raises:
            RateLimited: the store holds ``max_entries`` nonces that are all still live.
        """
        now = self.clock()
        with self._lock:
            while self._seen:
                oldest, expiry = next(iter(self._seen.items()))
                if expiry > now:
                    break
                del self._seen[oldest]
            slot = (pubkey, nonce)
            if slot in self._seen:
                return True
            if len(self._seen) >= self.max_entries:
                _, expiry = next(iter(self._seen.items()))
                raise RateLimited(
                    "too many signed requests in the replay window; retry later",
                    retry_after=max(1.0, expiry - now),
                )
            self._seen[slot] = now + self.max_age
            return False


def _host_port(authority: str) -> tuple[str, int | None]:
    """``"[::1]:80"`` → ``("::1", 80)``; ``"example.org"`` → ``("example.org", None)``."""
    host, port = authority, None
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif authority.count(":") == 1:
        name, _, p = authority.partition(":")
        if p.isdigit():
            host, port = name, int(p)
    return host.lower(), port


class RequestVerifier:
    """Verifies signed requests for one node.

    Args:
        max_age: the oldest ``created`` accepted, in seconds.
        max_nonces: the bound of the nonce store.
        public_addresses: ``host:port`` names the node is reached by besides the socket address.
        clock: Unix time (for ``created``).
        max_skew: how far ahead of ``clock`` a ``created`` may be, in seconds. Nonces are kept
            ``max_age + max_skew`` seconds, the time a signature stays acceptable.
    """

    def __init__(
        self,
        max_age: float = 300.0,
        max_nonces: int = 100_000,
        public_addresses: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        max_skew: float = MAX_SKEW,
    ) -> None:
        self.max_age = max_age
        self.max_skew = max_skew
        self.nonces = NonceStore(max_age + max_skew + 1, max_nonces)
        self.public = {_host_port(a) for a in public_addresses}
        self.clock = clock

    def authority_ok(self, scope: Mapping[str, Any], authority: str) -> bool:
        """Whether ``authority`` (the request's Host) names this node."""
        host, port = _host_port(authority)
        if (host, port) in self.public:
            return True
        server = scope.get("server")
        if not server:
            return False
        own_host, own_port = str(server[0]).lower(), server[1]
        default = 443 if scope.get("scheme") in ("https", "wss") else 80
        if (port if port is not None else default) != own_port:
            return False
        return host == own_host or (own_host in LOOPBACK and host in LOOPBACK)

    def verify(self, scope: Mapping[str, Any], body: bytes) -> PubKey:
        """The pubkey that signed the request of ``scope`` (with ``body``).

        Raises:
            BadSignature: (401) no valid signature, a stale or future ``created``, a replayed nonce,
                a tampered body or URL, or a request addressed to another host.
            RateLimited: the nonce store is full.
        """
        headers = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in scope["headers"]]
        authority = next((v for k, v in headers if k.lower() == "host"), "")
        if not self.authority_ok(scope, authority):
            raise BadSignature("request signature: the request is addressed to another host than this node")
        return verify_request(
            str(scope.get("method", "GET")),
            asgi_target_uri(scope),
            headers,
            body,
            self.clock(),
            max_age=self.max_age,
            seen_nonce=self.nonces.seen,
            max_skew=self.max_skew,
        )


def is_signed(scope: Mapping[str, Any]) -> bool:
    """Whether the request carries a ``Signature-Input`` header (then it must verify)."""
    for name, _ in scope.get("headers") or ():
        if len(name) == 15 and name.lower() == b"signature-input":  # len() first: most names differ
            return True
    return False
