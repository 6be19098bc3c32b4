"""``statebus serve`` as a real subprocess, for end-to-end tests of the command itself.

>>> node = ServedNode(tmp_path / "node")       # doctest: +SKIP
>>> node.url                                     # doctest: +SKIP
'http://127.0.0.1:41234'
>>> node.close()                                 # doctest: +SKIP

The node binds HTTP and its DHT to port 0 (``--dht-port 0``), logs at warning level, and writes
stderr to ``<data>-stderr.txt`` beside its data folder (not a terminal: on first start the recovery
phrase is kept in the data folder for ``statebus phrase``, and stderr says so). ``banner`` holds the
lines it printed up to the login link; later lines arrive in ``lines``.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

START_TIMEOUT = 60.0  # seconds; about 1 s on a quiet machine, but a busy CI machine can be 20x slower


class ServedNode:
    def __init__(self, data: Path, port: int = 0) -> None:
        self.data = data
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("STATEBUS_DATA_DIR", None)
        self.stderr_path = data.parent / (data.name + "-stderr.txt")
        self.stderr_file = self.stderr_path.open("a")
        command = [sys.executable, "-m", "statebus", "serve", "--port", str(port), "--dht-port", "0"]
        command += ["--log-level", "warning", "--data", str(data)]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self.stderr_file, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        self.pump = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self.pump.start()
        self.banner: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT
        while not any("/login?token=" in line for line in self.banner):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                how = "in time" if self.proc.poll() is None else f"(exit status {self.proc.returncode})"
                self.close()
                log = self.stderr_path.read_text()[-2000:]
                raise AssertionError(f"statebus serve did not start {how}: {log}")
            try:
                self.banner.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                pass
        found = re.search(r"serving at\s+(http://\S+)/", "".join(self.banner))
        assert found is not None, self.banner
        self.url = found.group(1)

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def close(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; idempotent."""
        if self.stderr_file.closed:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.pump.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr_file.close()
