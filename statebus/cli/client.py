"""The HTTP side of the ``statebus`` command: get, put, delete, watch and info against a running node.

Every failure becomes a :class:`~statebus.errors.StatebusError` whose detail is one clear line
(connection refused, the server's ``{"error", "detail"}``, bad JSON on the command line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from statebus.config import Settings
from statebus.errors import InvalidKey, InvalidValue, NotFound, PeerUnavailable, RemoteError, StatebusError
from statebus.identity import keystore
from statebus.server.runfile import running_url

INFO_PATH = "/.well-known/statebus"
TIMEOUT = 10.0
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 3.0, 5.0)
WAIT_POLL = 0.1


class Client:
    """An httpx client for one node: base ``url`` and, when the data folder has one, the owner token."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT, trust_env=False)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send a request; raise a one-line StatebusError for transport failures and 4xx/5xx answers."""
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise transport_error(self.url, exc) from None
        check(response)
        return response


def transport_error(url: str, exc: httpx.HTTPError) -> PeerUnavailable:
    """A one-line error for a request that got no answer."""
    if isinstance(exc, httpx.ConnectError):
        return PeerUnavailable(
            f"cannot connect to {url} (is `statebus serve` running there?)", status_hint=503
        )
    if isinstance(exc, httpx.TimeoutException):
        return PeerUnavailable(f"{url} did not answer in time", status_hint=504)
    return PeerUnavailable(f"request to {url} failed: {type(exc).__name__}")


def check(response: httpx.Response) -> None:
    """Raise the server's ``{"error", "detail"}`` as one line when the status is not a success."""
    if response.status_code < 400:
        return
    try:
        response.read()
        body = response.json()
        detail, code = str(body.get("detail") or ""), str(body.get("error") or "")
    except (ValueError, AttributeError):
        detail, code = "", ""
    reason = detail or response.reason_phrase
    raise RemoteError(
        f"{reason} (HTTP {response.status_code}{' ' + code if code else ''})",
        status_hint=response.status_code,
        remote_code=code,
    )


def client_for(settings: Settings, url: str | None) -> Client:
    """A client for ``url`` with the data folder's owner token. Without ``url``: the node that serves
    the data folder (its run file, ``<data>/node.json``), else the settings' host and port."""
    if url is None:
        url = running_url(settings.data_dir)
    if url is None:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{settings.port}"
    if not url.startswith(("http://", "https://")):
        raise InvalidValue(f"--url must start with http:// or https://, got {url!r}")
    token: str | None = None
    try:
        token = keystore.load_owner_token(settings.data_dir)
    except NotFound:
        token = None
    return Client(url, token)


def key_path(key: str) -> str:
    """The URL path of a key: ``/~/a`` and ``/<pubkey>/a`` as they are, a bare ``a/b`` → ``/~/a/b``."""
    key = key.strip()
    if not key:
        raise InvalidKey("name a key, e.g. /~/notes/1")
    if key == "/":
        raise InvalidKey("'/' is not a key; this node's keys are under /~/ (statebus get /~/ lists them)")
    if not key.startswith("/"):
        key = "/" + key if key == "~" or key.startswith("~/") else "/~/" + key
    return quote(key, safe="/~")


def parse_value(text: str) -> Any:
    """The JSON value typed on the command line (``-`` reads stdin)."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidValue(
            f"VALUE is not valid JSON ({exc.msg} at character {exc.pos}); quote text as '\"text\"'"
        ) from None


def _write_headers(args: argparse.Namespace) -> dict[str, str]:
    headers: dict[str, str] = {}
    if args.version:
        headers["Version"] = json.dumps(args.version)
    if args.parents:
        headers["Parents"] = ", ".join(json.dumps(p.strip()) for p in args.parents.split(",") if p.strip())
    if args.merge_type:
        headers["Merge-Type"] = args.merge_type
    return headers


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------- commands


def cmd_get(args: argparse.Namespace, settings: Settings, client: Client) -> int:
    path = key_path(args.key)
    if args.download:
        return download(client, path, args.download)
    params = {"range": args.range} if args.range else None
    if args.wait is not None and args.wait < 0:
        raise InvalidValue("--wait is a number of seconds, 0 or more")
    deadline = time.monotonic() + (args.wait or 0.0)
    while True:
        try:
            response = client.request("GET", path, params=params)
            break
        except RemoteError as exc:  # --wait: a value that has not arrived yet (a follow, a peer)
            if exc.status_hint != 404 or time.monotonic() >= deadline:
                raise
            time.sleep(WAIT_POLL)
    if args.show_version and response.headers.get("version"):
        sys.stderr.write(f"version: {response.headers['version']}\n")
    if path.endswith("/"):
        body = response.json()
        for name in body.get("children", []):
            sys.stdout.write(name + "\n")
        while body.get("next"):
            body = client.request("GET", path, params={"after": body["next"]}).json()
            for name in body.get("children", []):
                sys.stdout.write(name + "\n")
        return 0
    ctype = response.headers.get("content-type", "")
    if ctype.split(";")[0].strip() == "application/json":
        _print_json(response.json())
    else:
        sys.stdout.buffer.write(response.content)
        sys.stdout.flush()
    return 0


PROGRESS_EVERY = 0.5
"""Seconds between two progress lines of a download."""


def download(client: Client, path: str, target: str) -> int:
    """``get --download``: stream ``GET path?download`` to ``target`` (written to ``target.part`` and
    renamed when whole, so a failed download leaves nothing), with progress lines on stderr."""
    if path.endswith("/"):
        raise InvalidValue("--download saves one key's value; a subtree has none")
    out = Path(target)
    part = out.with_name(out.name + ".part")
    done = 0
    try:
        with client.http.stream("GET", path, params={"download": ""}) as response:
            if response.status_code >= 400:
                response.read()
                check(response)
            total = int(response.headers.get("content-length", "0") or 0)
            shown = time.monotonic()
            sink = sys.stdout.buffer if target == "-" else part.open("wb")
            try:
                for chunk in response.iter_bytes(1 << 16):
                    sink.write(chunk)
                    done += len(chunk)
                    if time.monotonic() - shown >= PROGRESS_EVERY:
                        shown = time.monotonic()
                        sys.stderr.write(_progress(done, total) + "\n")
            finally:
                if sink is not sys.stdout.buffer:
                    sink.close()
    except httpx.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise transport_error(client.url, exc) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if target != "-":
        part.replace(out)
    sys.stderr.write(_progress(done, total) + (f" -> {target}\n" if target != "-" else "\n"))
    return 0


def _progress(done: int, total: int) -> str:
    if total:
        return f"downloaded {done} of {total} bytes ({100 * done // total}%)"
    return f"downloaded {done} bytes"


def cmd_put(args: argparse.Namespace, settings: Settings, client: Client) -> int:
    path = key_path(args.key)
    headers = _write_headers(args)
    if args.content_type:
        if args.range:
            raise InvalidValue("--range patches JSON values; it cannot be used with --content-type")
        body = sys.stdin.buffer.read() if args.value == "-" else args.value.encode("utf-8")
        headers["Content-Type"] = args.content_type
        response = client.request("PUT", path, content=body, headers=headers)
    else:
        data = json.dumps(parse_value(args.value), ensure_ascii=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
        if args.range:
            headers["Content-Range"] = f"json {args.range}"
            response = client.request("PATCH", path, content=data, headers=headers)
        else:
            response = client.request("PUT", path, content=data, headers=headers)
    sys.stdout.write(" ".join(response.json().get("version", [])) + "\n")
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings, client: Client) -> int:
    path = key_path(args.key)
    if path.endswith("/"):
        raise InvalidKey("delete names one key, not a subtree (no trailing '/')")
    client.request("DELETE", path)
    return 0


def cmd_info(args: argparse.Namespace, settings: Settings, client: Client) -> int:
    try:
        cli_version = metadata.version("statebus-server")
    except metadata.PackageNotFoundError:
        cli_version = "unknown"
    if args.url is None and running_url(settings.data_dir) is None and keystore.exists(settings.data_dir):
        return _info_not_running(settings, cli_version)  # no node serves the folder (no live run file)
    info = client.request("GET", INFO_PATH).json()
    rows = [
        ("node", info.get("node")),
        ("url", client.url),
        ("data", str(Path(settings.data_dir))),
        ("owner", "yes" if info.get("owner") else "no (no owner token for this node in the data folder)"),
        ("keys", info.get("keys") if info.get("keys") is not None else "(owner only)"),
        ("storage", info.get("storage") or "(owner only)"),
        ("server version", info.get("version")),
        ("cli version", cli_version),
    ]
    for name, value in rows:
        sys.stdout.write(f"{name + ':':16}{value}\n")
    return 0


def _info_not_running(settings: Settings, cli_version: str) -> int:
    """``statebus info`` with no node serving the data folder: what the folder itself says."""
    rows = [
        ("node", keystore.load(settings.data_dir).pubkey),
        ("url", "not running (no node serves this data folder; `statebus serve` starts it)"),
        ("data", str(Path(settings.data_dir))),
        ("cli version", cli_version),
    ]
    for name, value in rows:
        sys.stdout.write(f"{name + ':':16}{value}\n")
    return 0


# ---------------------------------------------------------------------- watch


def _format_event(event: str, data: dict[str, Any], local: str | None = None) -> str:
    key = str(data.get("key", ""))
    if local and key.startswith(f"/{local}/"):
        key = "/~" + key[len(local) + 1 :]
    if event == "reset":
        return f"reset {data.get('reason', '')}"
    if event == "delete" or data.get("deleted"):
        return f"{event} {key}"
    if "patches" in data:
        parts = []
        for patch in data["patches"]:
            parts.append(
                f"{patch[0]} = {json.dumps(patch[1], ensure_ascii=False)}"
                if len(patch) > 1
                else f"{patch[0]} removed"
            )
        return f"{event} {key} patch " + "; ".join(parts)
    if "value_base64" in data:
        return f"{event} {key} <{data.get('content_type', 'bytes')}, base64 {data['value_base64'][:40]}>"
    return f"{event} {key} {json.dumps(data.get('value'), ensure_ascii=False)}"


def cmd_watch(args: argparse.Namespace, settings: Settings, client: Client) -> int:
    path = key_path(args.key)
    local = _local_pubkey(client)
    last_id: str | None = args.since
    seen = 0
    connected_once = False
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            with client.http.stream(
                "GET", path, headers=headers, timeout=httpx.Timeout(TIMEOUT, read=None)
            ) as r:
                check(r)
                connected_once, failures = True, 0
                for event, ident, data in _sse_events(r):
                    if ident is not None:
                        last_id = ident
                    if data is None:
                        continue
                    if event == "error":
                        sys.stderr.write(f"statebus: stream cut off: {data.get('detail', '')}; resuming\n")
                        continue
                    line = (
                        json.dumps({"event": event, "id": ident, **data})
                        if args.json
                        else _format_event(event, data, local)
                    )
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        return 0
        except httpx.HTTPError as exc:
            if not connected_once:
                raise transport_error(client.url, exc) from None
        delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
        failures += 1
        sys.stderr.write(
            f"statebus: connection lost; reconnecting in {delay:g}s (resuming after {last_id})\n"
        )
        sys.stderr.flush()
        time.sleep(delay)


def _local_pubkey(client: Client) -> str | None:
    """The node's pubkey from its info document (None when it has none)."""
    try:
        node = client.request("GET", INFO_PATH).json().get("node")
    except StatebusError as exc:
        if exc.status_hint >= 500:
            raise
        return None
    return node if isinstance(node, str) else None


def _sse_events(response: httpx.Response) -> Iterator[tuple[str, str | None, Any]]:
    """Yield ``(event, id, data)`` for each dispatched SSE block (data parsed as JSON, None if none)."""
    event: str = "message"
    ident: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data or ident is not None:
                yield event, ident, json.loads("\n".join(data)) if data else None
            event, ident, data = "message", None, []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            ident = value
        elif name == "data":
            data.append(value)
