"""A subscriber that never reads is cut off; writers keep their latency; other readers keep up."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx

from statebus.testing.live_server import SseReader, live_server, sse_headers

WRITES = 150
PAYLOAD = "x" * 60_000


class StallWatch:
    """Records when this whole process was not running (a loaded or shared machine), so a write that
    waited inside the node can be told from a test process that was not scheduled at all.

    A thread sleeps ``tick`` seconds in a loop; a wake-up more than ``slack`` late is a stall. While the
    node's writer waits on a socket, this thread keeps waking on time, so such a wait is never excused.
    """

    def __init__(self, tick: float = 0.005, slack: float = 0.05) -> None:
        self.tick, self.slack = tick, slack
        self.stalls: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        before = time.monotonic()
        while not self._stop.is_set():
            time.sleep(self.tick)
            now = time.monotonic()
            if now - before > self.tick + self.slack:
                self.stalls.append((before + self.tick, now))
            before = now

    def stalled(self, start: float, end: float) -> float:
        """Seconds between ``start`` and ``end`` during which this process was not scheduled."""
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in list(self.stalls))


def test_slow_subscriber_is_cut_off_without_stalling_writers(tmp_path: Path) -> None:
    with live_server(tmp_path / "n", subscriber_buffer=20, sse_ping_interval=0.2) as srv:
        httpx.put(srv.url + "/~/bp", json=0, headers=srv.auth)
        host, port = srv.url.removeprefix("http://").split(":")
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((host, int(port)))
        request = (
            f"GET /~/bp HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {srv.token}\r\n\r\n"
        )
        slow.sendall(request.encode())
        got: list[object] = []
        fast_ready = threading.Event()

        def fast_reader() -> None:
            with httpx.stream("GET", srv.url + "/~/bp", headers=sse_headers(srv), timeout=30) as r:
                sse = SseReader(r)
                sse.next_event()
                fast_ready.set()
                while len(got) < WRITES:
                    got.append(sse.next_event()["data"]["value"][:1])

        reader = threading.Thread(target=fast_reader)
        reader.start()
        try:
            assert fast_ready.wait(10)
            deadline = time.monotonic() + 5
            while srv.node.stream_count < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert srv.node.stream_count == 2
            latencies = []
            with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as c, StallWatch() as watch:
                for i in range(WRITES):
                    t0 = time.monotonic()
                    assert c.put("/~/bp", json=f"{i % 10}{PAYLOAD}").status_code == 200
                    t1 = time.monotonic()
                    latencies.append(t1 - t0 - watch.stalled(t0, t1))  # the time the node had to answer
            reader.join(30)
            assert len(got) == WRITES  # the reader that keeps up saw every change
            deadline = time.monotonic() + 5
            while srv.node.stream_count > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert srv.node.stream_count == 0, "the slow subscriber was not cut off"
            latencies.sort()
            assert latencies[len(latencies) // 2] < 0.2 and latencies[-1] < 1.0, latencies[-5:]
        finally:
            slow.close()
            reader.join(10)
