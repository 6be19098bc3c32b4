"""Byte ranges in real headless Chromium: a page's ``fetch`` with ``Range`` gets 206, and an
``<audio>`` element plays a value the node serves (Chromium asks for it with ``Range: bytes=0-``)."""

from __future__ import annotations

import struct
from pathlib import Path

import httpx
import pytest

from statebus.testing.live_server import live_server
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")


def wav(seconds: float, rate: int = 8000) -> bytes:
    """A mono 8-bit PCM WAV file of silence."""
    n = int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + n)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", n)
        + b"\x80" * n
    )


SCRIPT = """
(async () => {
  const out = {};
  try {
    const r = await fetch('/~/media/clip', {headers: {Range: 'bytes=0-11'}});
    const bytes = Array.from(new Uint8Array(await r.arrayBuffer()));
    out.fetch = {status: r.status, range: r.headers.get('content-range'),
                 accept: r.headers.get('accept-ranges'), bytes};
    const audio = document.createElement('audio');
    audio.preload = 'auto';
    const loaded = new Promise((ok, fail) => {
      audio.addEventListener('loadedmetadata', () => ok(audio.duration));
      audio.addEventListener('error', () => fail(new Error('media error ' + audio.error?.code)));
    });
    audio.src = '/~/media/clip';
    document.body.append(audio);
    out.duration = await loaded;
    const timing = performance.getEntriesByType('resource').filter(e => e.name.endsWith('/~/media/clip'));
    out.statuses = timing.map(e => e.responseStatus);
  } catch (e) { out.error = String(e); }
  window.__result = out;
  window.__done = true;
})()
"""


def test_fetch_and_audio_get_206(tmp_path: Path) -> None:
    clip = wav(2.0)
    with live_server(tmp_path / "node", timeout=60) as srv:
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
            assert owner.put("/~/media/clip", content=clip, headers={"Content-Type": "audio/wav"}).is_success
        out = run_browser(f"{srv.url}/login?token={srv.token}", SCRIPT, timeout=90)
    assert out["ok"], out
    result = out["result"]
    assert "error" not in result, result
    assert result["fetch"] == {
        "status": 206,
        "range": f"bytes 0-11/{len(clip)}",
        "accept": "bytes",
        "bytes": list(clip[:12]),
    }
    assert abs(result["duration"] - 2.0) < 0.01
    assert 206 in result["statuses"], result  # the media element's request was answered with a range
