"""Drive the JavaScript test harnesses in ``tests/js`` from pytest.

``tests/js/braid_client.mjs`` wraps the real npm ``braid-http`` client, ``tests/js/browser.mjs`` drives
Debian's headless Chromium through playwright-core, and ``tests/js/ref_server.mjs`` is braid-http's own
reference server. Each harness prints JSON lines; these helpers run them as subprocesses in their own
process group, parse the lines, and always kill the whole group when done or timed out.

Example::

    with ref_server() as base:
        run_braid_client([f"{base}/k", "--put", '{"a": 1}', "--version", '"v1"'], timeout=10)
        lines = run_braid_client([f"{base}/k", "--subscribe", "--max-updates", "1"], timeout=10)
        assert updates(lines)[0]["body"] == '{"a": 1}'
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

JsonLine = dict[str, Any]

_DEFAULT_CHROMIUM = "/usr/bin/chromium"


def js_dir() -> Path:
    """Return the ``tests/js`` directory of this checkout (override with ``STATEBUS_JS_DIR``)."""
    override = os.environ.get("STATEBUS_JS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "js"


def node_available() -> bool:
    """True when ``node`` is on PATH and ``npm ci`` has been run in ``tests/js``."""
    return shutil.which("node") is not None and (js_dir() / "node_modules" / "braid-http").is_dir()


def chromium_path() -> str:
    """Return the Chromium binary the browser harness uses (``$CHROMIUM`` or /usr/bin/chromium)."""
    return os.environ.get("CHROMIUM", _DEFAULT_CHROMIUM)


def browser_available() -> bool:
    """True when the browser harness can run: node, playwright-core and a Chromium binary."""
    return (
        node_available()
        and (js_dir() / "node_modules" / "playwright-core").is_dir()
        and os.access(chromium_path(), os.X_OK)
    )


def _parse_lines(text: str) -> list[JsonLine]:
    out: list[JsonLine] = []
    for line in text.splitlines():
        if line.strip():
            out.append(_parse_line(line))
    return out


def _parse_line(line: str) -> JsonLine:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return {"type": "raw", "text": line}
    return value if isinstance(value, dict) else {"type": "raw", "text": line}


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the process and everything left in its process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _run_node(
    script: str, args: Sequence[str], timeout: float, flags: Sequence[str] = ()
) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        ["node", *flags, str(js_dir() / script), *args],
        cwd=js_dir(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        raise TimeoutError(
            f"{script} did not finish in {timeout} s; stdout={stdout[-2000:]!r} stderr={stderr[-2000:]!r}"
        ) from None
    finally:
        _kill_group(proc)
    return proc.returncode, stdout, stderr


def run_braid_client(args: Sequence[str], timeout: float = 15.0) -> list[JsonLine]:
    """Run ``braid_client.mjs`` (the real braid-http client) to completion.

    Args:
        args: its command line, e.g. ``[url, "--subscribe", "--max-updates", "2"]``. Unless ``args``
            sets ``--timeout-ms``, the client is told to stop one second before ``timeout``.
        timeout: seconds before the process group is killed.

    Returns:
        The JSON lines it printed: a ``response`` line, ``update`` lines, then ``end`` or ``error``.

    Raises:
        TimeoutError: the client was still running after ``timeout`` seconds (it has been killed).
    """
    argv = list(args)
    if "--timeout-ms" not in argv:
        argv += ["--timeout-ms", str(max(100, int((timeout - 1.0) * 1000)))]
    _, stdout, _ = _run_node("braid_client.mjs", argv, timeout)
    return _parse_lines(stdout)


def updates(lines: Sequence[JsonLine]) -> list[JsonLine]:
    """Return only the ``update`` lines of a braid client run."""
    return [line for line in lines if line.get("type") == "update"]


def run_browser(
    url: str,
    script: str | None = None,
    timeout: float = 30.0,
    *,
    wait: str | None = "window.__done === true",
    inject_braid: bool = False,
    screenshot: str | os.PathLike[str] | None = None,
    before: Sequence[str] = (),
    cookies: bool = False,
    extra_args: Sequence[str] = (),
) -> JsonLine:
    """Open ``url`` in headless Chromium, run ``script`` and return what the page reported.

    Args:
        url: page to open (loopback only).
        script: inline JavaScript or a path to a .js file, run in the page after load.
        timeout: seconds for the whole run; the harness gets ``timeout - 3`` for its own limit.
        wait: page expression to wait for, or None to return right after the script.
        inject_braid: load braid-http's browser client first (``window.braid_fetch``).
        screenshot: where to save a PNG screenshot, if wanted.
        before: pages to open first, in the page's own tab, in order, in the same browser profile
            (e.g. login links).
        cookies: also return the browser's cookie jar (``"cookies"``), HttpOnly cookies included.
        extra_args: more ``browser.mjs`` options.

    Returns:
        ``{"ok", "result" (window.__result), "console", "page_errors", "error", "url", "title",
        "before"}`` (and ``"visits"`` with ``--visit``, ``"cookies"`` when asked).

    Raises:
        TimeoutError: the harness itself hung past ``timeout`` (it has been killed).
    """
    argv = [url, "--timeout-ms", str(max(1000, int((timeout - 3.0) * 1000))), "--chromium", chromium_path()]
    if script is not None:
        argv += ["--script", script]
    argv += ["--no-wait"] if wait is None else ["--wait", wait]
    if inject_braid:
        argv.append("--inject-braid")
    if screenshot is not None:
        argv += ["--screenshot", os.fspath(screenshot)]
    for page in before:
        argv += ["--before", page]
    if cookies:
        argv.append("--cookies")
    argv += list(extra_args)
    code, stdout, stderr = _run_node("browser.mjs", argv, timeout)
    lines = _parse_lines(stdout)
    if lines and "ok" in lines[-1]:
        return lines[-1]
    return {
        "ok": False,
        "result": None,
        "console": [],
        "page_errors": [],
        "error": f"exit {code}: {stderr[-2000:]}",
    }


class NodeProcess:
    """A long-running harness process whose JSON lines are read as they arrive.

    Use as a context manager; leaving it kills the process group. ``lines`` holds every line read so far.
    """

    def __init__(self, script: str, args: Sequence[str]) -> None:
        self._proc = subprocess.Popen(
            ["node", str(js_dir() / script), *args],
            cwd=js_dir(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._queue: queue.Queue[JsonLine | None] = queue.Queue()
        self._stderr: list[str] = []
        self.lines: list[JsonLine] = []
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump_stdout, args=(self._proc.stdout,), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self._proc.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            if line.strip():
                self._queue.put(_parse_line(line))
        self._queue.put(None)

    def _pump_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        return "".join(self._stderr)

    @property
    def returncode(self) -> int | None:
        """Exit code, or None while it runs."""
        return self._proc.poll()

    def next_line(self, timeout: float) -> JsonLine:
        """Return the next JSON line.

        Raises:
            TimeoutError: nothing arrived in ``timeout`` seconds.
            EOFError: the process closed its stdout.
        """
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no output in {timeout} s; stderr={self.stderr[-2000:]!r}") from None
        if line is None:
            self._queue.put(None)
            raise EOFError(f"process exited ({self._proc.poll()}); stderr={self.stderr[-2000:]!r}")
        self.lines.append(line)
        return line

    def wait_for(self, predicate: Callable[[JsonLine], bool], timeout: float) -> JsonLine:
        """Read lines until one satisfies ``predicate`` and return it (TimeoutError/EOFError otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.0, deadline - time.monotonic()))
            if predicate(line):
                return line

    def close(self) -> list[JsonLine]:
        """Kill the process group and return every line read, including any still queued."""
        _kill_group(self._proc)
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        with contextlib.suppress(TimeoutError, EOFError):
            while True:
                self.next_line(timeout=0.1)
        return self.lines

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_braid_client(args: Sequence[str]) -> NodeProcess:
    """Start ``braid_client.mjs`` in the background (e.g. a subscriber); read it with ``wait_for``."""
    return NodeProcess("braid_client.mjs", args)


@contextlib.contextmanager
def ref_server(timeout: float = 10.0) -> Iterator[str]:
    """Run braid-http's reference server on 127.0.0.1 port 0; yield its base URL, then stop it."""
    with NodeProcess("ref_server.mjs", ["--host", "127.0.0.1", "--port", "0"]) as proc:
        line = proc.wait_for(lambda item: "port" in item, timeout)
        yield f"http://127.0.0.1:{int(line['port'])}"


def yjs_available() -> bool:
    """True when ``node`` is on PATH and the JS ``yjs`` package is installed in ``tests/js``."""
    return shutil.which("node") is not None and (js_dir() / "node_modules" / "yjs").is_dir()


def yjs_updates(which: str) -> list[bytes]:
    """The Yjs updates ``tests/js/yjs_docs.mjs`` builds with the real JS ``yjs`` package, in order."""
    out = subprocess.run(
        ["node", str(js_dir() / "yjs_docs.mjs"), which],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [base64.b64decode(line) for line in out.split()]


def y_websocket_available() -> bool:
    """True when the JS ``yjs`` and ``y-websocket`` packages are installed in ``tests/js``."""
    return yjs_available() and (js_dir() / "node_modules" / "y-websocket").is_dir()


def run_yjs_client(args: Sequence[str], timeout: float = 20.0) -> list[JsonLine]:
    """Run ``tests/js/yjs_client.mjs`` (the real JS ``yjs``, and y-websocket's stock
    ``WebsocketProvider``; Node 20 needs ``--experimental-websocket`` for the WebSocket it uses) to
    completion and return its JSON lines (the last one is its result, or ``{"error": …}``)."""
    _, stdout, stderr = _run_node("yjs_client.mjs", args, timeout, flags=["--experimental-websocket"])
    lines = _parse_lines(stdout)
    if not lines:
        return [{"error": stderr[-2000:]}]
    return lines
