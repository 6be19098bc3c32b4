"""Installing apps: from a file, a URL, or an author's published pointer fetched through federation.

    service = AppService(registry, settings, follow=follow_fn)   one per node (statebus.server)
    bundle = service.check(data, signature)                      checked and staged, NOT installed
    bundle = await service.check_published(author, name, via)    the same, through federation
    app = await service.install(bundle.hash, grants)             the owner consented to ``grants``
    await service.remove(name)
    bundle = await service.publish(data, signature)              the author's node publishes it

    data, sig = read_files("guestbook-1.0.0.sbx")                the bundle and ``<file>.sig``
    data, sig = fetch_url("https://…/guestbook-1.0.0.sbx", max_bytes)   and ``<url>.sig``

Install is two steps so the owner sees what they consent to: :meth:`AppService.check` verifies a
bundle (every check of :func:`~statebus.apps.bundle.open_bundle`) and stages it in memory; the
permissions it asks for go to the owner (the CLI's prompt, the node page); :meth:`install` then
installs the staged bundle by its hash with the grants the owner gave.

Rules:
    1. Whichever way the bytes came (file, URL, federation) they pass the same check: the hash the
       pointer or signature names, the signature, the manifest, every entry. A release key's
       delegation is also checked against the author's record this node holds (replicated from the
       author's ``.keys/``): a key revoked since it signed is refused.
    2. Through federation the node follows ``/<author>/.apps/`` (the follow stays, so an upgrade finds
       the next version) and waits, at most ``app_fetch_timeout``, for the pointer, the blob pointer
       of the bundle it names, and the blob's bytes to arrive in its own replica (every op verified by
       the federation's ingest, the bytes against the blob pointer's sha256 by the blob fetcher). A
       blob pointer naming other bytes than the app's pointer is refused at once, and so are a
       pointer naming more than ``app_bundle_max_bytes`` and a fetch the blob fetcher refused
       (``bad_blob``: a server sent other bytes), with its reason.
    3. Staging keeps at most :data:`MAX_STAGED` checked bundles, newest last; nothing staged is on
       disk or in the store until :meth:`install`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import httpx

from statebus.apps.bundle import SIGNATURE_SUFFIX, Bundle, Signature, check_signer, open_bundle
from statebus.apps.patterns import Grants
from statebus.apps.publish import Pointer, bundle_key, parse_pointer, pointer_key, publish_writes
from statebus.apps.registry import AppRegistry, InstalledApp
from statebus.blobs import BLOB_TYPE, BlobPointer
from statebus.config import Settings
from statebus.errors import BadBlob, InvalidBundle, InvalidValue, NotFound, PeerUnavailable, TooLarge
from statebus.identity import record_key as delegation_key
from statebus.keys import is_pubkey
from statebus.types import PubKey

MAX_STAGED = 8
REFUSALS = ("bad_blob", "too_large", "quota_exceeded")
"""Blob fetch failures that end an install at once (others, a peer briefly away, are waited out)."""
POLL = 0.05

Follow = Callable[[str, Sequence[str]], Awaitable[None]]
"""``follow(pattern, via)``: make the node follow ``pattern`` (``/<author>/.apps/``)."""
BlobFailure = Callable[[str], "str | None"]
"""``blob_failure(sha256)``: why the federation's blob fetcher last refused that blob, or None."""


def read_files(path: str | Path) -> tuple[bytes, Signature]:
    """A bundle file and its signature (``<path>.sig``)."""
    p = Path(path)
    sig_path = p.with_name(p.name + SIGNATURE_SUFFIX)
    if not sig_path.is_file():
        raise InvalidBundle(
            f"{sig_path} is missing: a bundle is installed with its signature (`statebus app pack`)"
        )
    return p.read_bytes(), Signature.parse(sig_path.read_bytes())


def fetch_url(url: str, max_bytes: int, timeout: float = 30.0) -> tuple[bytes, Signature]:
    """A bundle and its signature (``<url>.sig``) over HTTP(S), at most ``max_bytes`` read."""
    if not url.startswith(("http://", "https://")):
        raise InvalidValue(f"{url[:80]!r} is not an http(s) URL")
    with httpx.Client(timeout=timeout, follow_redirects=True, trust_env=False) as http:
        data = _download(http, url, max_bytes)
        sig = _download(http, url + SIGNATURE_SUFFIX, 64 * 1024)
    return data, Signature.parse(sig)


def _download(http: httpx.Client, url: str, max_bytes: int) -> bytes:
    try:
        with http.stream("GET", url) as response:
            if response.status_code != 200:
                raise PeerUnavailable(f"{url} answered HTTP {response.status_code}")
            out = bytearray()
            for chunk in response.iter_bytes():
                out += chunk
                if len(out) > max_bytes:
                    raise TooLarge(f"{url} is over {max_bytes} bytes (app_bundle_max_bytes)")
            return bytes(out)
    except httpx.HTTPError as exc:
        raise PeerUnavailable(f"cannot fetch {url}: {type(exc).__name__}") from None


def parse_source_key(text: str) -> tuple[PubKey, str]:
    """``/<author>/.apps/<name>`` → (author, name)."""
    parts = text.strip().split("/")
    if len(parts) != 4 or parts[0] != "" or parts[2] != ".apps" or not is_pubkey(parts[1]) or not parts[3]:
        raise InvalidValue(f"{text[:80]!r} is not a published app key (/<author pubkey>/.apps/<name>)")
    return parts[1], parts[3]


class AppService:
    """A node's apps, as its owner manages them (every rule above).

    Args:
        registry: the node's :class:`AppRegistry`.
        settings: ``app_bundle_max_bytes``, ``app_fetch_timeout``.
        follow: how the node follows an author's ``/.apps/`` (None: no federation; installing from
            a published key is refused).
        blob_failure: the federation blob fetcher's last refusal of a blob (rule 2).
    """

    def __init__(
        self,
        registry: AppRegistry,
        settings: Settings,
        *,
        follow: Follow | None = None,
        blob_failure: BlobFailure | None = None,
    ) -> None:
        self.registry = registry
        self.blob_failure = blob_failure
        self.max_bytes = settings.app_bundle_max_bytes
        self.fetch_timeout = settings.app_fetch_timeout
        self.follow = follow
        self._staged: OrderedDict[str, Bundle] = OrderedDict()

    def check(self, data: bytes, signature: Signature, *, expect_hash: str | None = None) -> Bundle:
        """Check a bundle (rule 1) and stage it for :meth:`install`."""
        bundle = open_bundle(data, signature, self.max_bytes, expect_hash=expect_hash)
        author = bundle.manifest.author
        if signature.signer != author:  # the author may have revoked the release key since it signed
            known = self.registry.node.fetch_or_none(delegation_key(author, signature.signer), durable=True)
            if known is not None and known.exists:
                check_signer(signature, bundle.manifest, stored=known.value)
        self._staged[bundle.hash] = bundle
        self._staged.move_to_end(bundle.hash)
        while len(self._staged) > MAX_STAGED:
            self._staged.popitem(last=False)
        return bundle

    async def check_published(self, author: PubKey, name: str, via: Sequence[str] = ()) -> Bundle:
        """Fetch ``/<author>/.apps/<name>`` and its bundle through federation (rule 2), check and stage it.

        Raises:
            PeerUnavailable: (504) they did not arrive within ``app_fetch_timeout``, or there is no
                federation.
        """
        if author != self.registry.node.local:
            if self.follow is None:
                raise PeerUnavailable(
                    "this node runs without federation: install from a file or a URL instead", status_hint=503
                )
            await self.follow(f"/{author}/.apps/", via)
        pointer = await self._arrived(author, name)
        data = self.registry.bundle_bytes(pointer.hash)
        if data is None:
            raise NotFound(f"the bundle {pointer.hash} of {pointer_key(author, name)} is not stored")
        bundle = self.check(data, pointer.signature, expect_hash=pointer.hash)
        if bundle.manifest.author != author:
            raise InvalidBundle(f"{pointer_key(author, name)} points at an app by {bundle.manifest.author}")
        return bundle

    def _bundle_blob(self, author: PubKey, name: str, pointer: Pointer) -> str | None:
        """None once the bytes of ``pointer``'s bundle are in the blob store, else why not (rule 2)."""
        if pointer.size > self.max_bytes:
            raise TooLarge(
                f"{pointer_key(author, name)} names a bundle of {pointer.size} bytes; "
                f"app_bundle_max_bytes is {self.max_bytes}"
            )
        key = bundle_key(author, pointer.hash)
        change = self.registry.node.fetch_or_none(key, durable=True)
        if change is None or not change.exists:
            return f"{key} has not arrived"
        try:
            blob = BlobPointer.decode(bytes(change.value)) if change.content_type == BLOB_TYPE else None
        except BadBlob:
            blob = None
        if blob is None or blob.hash != pointer.hash or blob.size != pointer.size:
            raise InvalidBundle(
                f"{key} does not point to the {pointer.size} bytes of sha256 {pointer.hash} that "
                f"{pointer_key(author, name)} names (tampered?)"
            )
        if self.registry.blobs.has(pointer.hash):
            return None
        failure = self.blob_failure(pointer.hash) if self.blob_failure is not None else None
        if failure is not None and any(code in failure for code in REFUSALS):
            raise InvalidBundle(f"the bundle's bytes were refused: {failure}")
        return f"the bytes of the bundle {pointer.hash[:16]}… ({pointer.size} bytes) have not arrived"

    async def _arrived(self, author: PubKey, name: str) -> Pointer:
        node = self.registry.node
        deadline = time.monotonic() + self.fetch_timeout
        key = pointer_key(author, name)
        reason = f"{key} has not arrived"
        while True:
            change = node.fetch_or_none(key, durable=True)
            if change is not None and change.exists:
                try:
                    pointer = parse_pointer(change.value)
                except InvalidBundle as exc:
                    reason = f"{key} is not a published app: {exc.detail}"
                else:
                    missing = self._bundle_blob(author, name, pointer)
                    if missing is None:
                        return pointer
                    reason = missing
            if time.monotonic() >= deadline:
                raise PeerUnavailable(
                    f"{reason} after {self.fetch_timeout:g}s (is the author's node reachable? --via URL)",
                    status_hint=504,
                )
            await asyncio.sleep(POLL)

    async def publish(self, data: bytes, signature: Signature) -> Bundle:
        """Publish a bundle from its author's node (:mod:`statebus.apps.publish`): check it, put its
        bytes in the blob store, then write its blob pointer, the app's pointer and the share."""
        bundle = open_bundle(data, signature, self.max_bytes)
        node = self.registry.node
        current = self.registry.record(bundle.manifest.name)
        for w in publish_writes(bundle, node.local, current):
            if w.blob is not None:
                self.registry.blobs.put_bytes(w.blob, expect=bundle.hash)
            await node.save(w.key, w.value, content_type=w.content_type)
        return bundle

    def staged(self, hash_: str) -> Bundle:
        bundle = self._staged.get(hash_)
        if bundle is None:
            raise NotFound(f"no checked bundle {hash_[:64]!r} waits for install: check it first")
        return bundle

    async def install(self, hash_: str, grants: Grants) -> InstalledApp:
        """Install the staged bundle ``hash_`` with ``grants`` (the registry's checks apply)."""
        app = await self.registry.install(self.staged(hash_), grants)
        self._staged.pop(hash_, None)
        return app

    async def remove(self, name: str) -> None:
        await self.registry.remove(name)

    def list(self) -> list[InstalledApp]:
        return self.registry.list()


__all__ = ["AppService", "BlobFailure", "Follow", "fetch_url", "parse_source_key", "read_files"]
