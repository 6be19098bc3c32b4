"""SIGTERM to a serving node: open streams end, the process exits 0, every acknowledged write is on disk."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from statebus.bus import Bus
from statebus.identity import keystore
from statebus.storage.sqlite import SqliteStorage

SERVE = (
    "import sys; from pathlib import Path; from statebus.config import Settings; "
    "from statebus.server import serve; "
    "serve(Settings(data_dir=Path(sys.argv[1]), host='127.0.0.1', port=0, dht_port=0, log_level='info'))"
)


def start(data: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(data)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    log: list[str] = []
    deadline = time.monotonic() + 60  # about 1 s when quiet; a starved CI machine is far slower
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        log.append(line)
        m = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
            return proc, f"http://127.0.0.1:{m.group(1)}", log
    proc.kill()
    proc.wait(5)
    raise AssertionError("server did not start: " + "".join(log))


def test_sigterm_ends_streams_and_keeps_acknowledged_writes(tmp_path: Path) -> None:
    data = tmp_path / "node"
    proc, url, log = start(data)
    try:
        auth = {"Authorization": f"Bearer {keystore.load_owner_token(data)}"}
        acked: dict[str, int] = {}
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            with httpx.Client(base_url=url, headers=auth, timeout=10) as c:
                i = 0
                while not stop.is_set():
                    try:
                        r = c.put(f"/~/w{n}/{i}", json={"i": i})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        acked[f"/~/w{n}/{i}"] = i
                    elif r.status_code != 503:
                        errors.append(AssertionError(r.text))
                    i += 1

        ended: list[str] = []
        opened: list[str] = []

        def streamer(headers: dict[str, str], path: str) -> None:
            try:
                with httpx.stream("GET", url + path, headers={**auth, **headers}, timeout=30) as r:
                    opened.append(path)
                    for _ in r.iter_raw():
                        pass
                ended.append(path)
            except httpx.HTTPError as exc:
                errors.append(exc)

        streams = [
            threading.Thread(target=streamer, args=({"Accept": "text/event-stream"}, "/~/")),
            threading.Thread(target=streamer, args=({"Subscribe": "true"}, "/~/w0/0")),
        ]
        writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in streams + writers:
            t.start()
        deadline = time.monotonic() + 30
        while (len(acked) < 20 or len(opened) < 2) and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert len(acked) >= 20 and len(opened) == 2, (len(acked), opened, errors)  # both streams are open
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown: the exit status says "SIGTERM"
        assert proc.wait(15) in (0, -signal.SIGTERM), "".join(log)
        took = time.monotonic() - t0
        stop.set()
        for t in streams + writers:
            t.join(10)
        assert not errors, errors
        assert sorted(ended) == ["/~/", "/~/w0/0"]  # both streams completed cleanly
        assert took < 8, took
        assert "Application shutdown complete" in "".join(log)
        assert "Traceback" not in "".join(log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
    identity = keystore.load(data)
    storage = SqliteStorage(data / "store.sqlite3")
    try:
        bus = Bus(storage, local=identity.pubkey)
        for key, i in acked.items():
            assert bus.fetch(key).value == {"i": i}, key
    finally:
        storage.close()
