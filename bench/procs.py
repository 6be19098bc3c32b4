"""Processes of a benchmark run: the servers under test (subprocesses) and /proc readings of them.

Every server is started with ``python -m bench.serve_node`` or ``python -m bench.reference``; it binds
127.0.0.1 port 0 itself and prints one JSON line ``{"port": …, "pid": …}`` once it accepts
connections. :class:`ServerProcess` is a context manager: the process is always stopped (SIGTERM,
then SIGKILL) on exit.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def prioritised(nice: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that runs the child in its own session at scheduling priority ``nice``.

    With autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``), a nice value only
    counts within a session's group, so the child gets a session of its own and sets that group's
    nice too (``/proc/self/autogroup``). Negative values need root. None when ``nice`` is 0.
    """
    if not nice:
        return None

    def apply() -> None:
        os.setsid()
        try:
            with open("/proc/self/autogroup", "w") as fh:
                fh.write(str(nice))
        except OSError:
            pass
        os.nice(nice)

    return apply


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        text = fh.read()
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine spent busy since boot (/proc/stat, every core)."""
    with open("/proc/stat", "rb") as fh:
        fields = fh.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc/<pid>/statm."""
    with open(f"/proc/{pid}/statm", "rb") as fh:
        return int(fh.read().split()[1]) * PAGE


class ServerProcess:
    """A server subprocess (``python -m <module> <args>``) that reports its port on stdout."""

    def __init__(
        self, module: str, args: list[str], *, env: dict[str, str] | None = None, nice: int = 0
    ) -> None:
        self.module = module
        self.nice = nice
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.pid = 0

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, **(self.env or {}), "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdout=subprocess.PIPE,
            cwd=root,
            env=env,
            preexec_fn=prioritised(self.nice),
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            status = self.proc.poll()
            self.stop()
            raise OSError(f"{self.module} did not start (exit status {status})")
        info = json.loads(line)
        self.port = int(info["port"])
        self.pid = int(info["pid"])

    def stop(self, timeout: float = 15.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self.proc = None
