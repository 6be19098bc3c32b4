"""One origin per installed app: ``http://<name>.localhost:<port>/`` (and ``<name>.<public host>``).

An app's web page is code written by someone else. It runs on an origin of its own, so it can never
read the node page's login cookie or token, nor be read by it. The node routes requests by their
``Host`` header (:meth:`AppOrigins.app_of`): ``<name>.localhost`` (browsers resolve ``*.localhost``
to loopback) and ``<name>.<host>`` for every host the settings name (``public_origins``,
``public_addresses``) are an app's origin; everything else is the node's.

What an app's origin serves, and nothing else:

* the app's web files (``GET``/``HEAD``; ``/`` is ``index.html``), from its installed bundle;
* ``/statebus.js`` (the node's browser client) and ``/.well-known/statebus`` (the node's public info);
* the key API (``/~/…``, ``/<pubkey>/…``: GET, PUT, PATCH, DELETE, SSE, Braid) and the websocket,
  authenticated by the app's capability cookie only (:meth:`~statebus.http.auth.OwnerAuth.app_client`)
  and limited to its grants (:mod:`statebus.access.capabilities`);
* ``/.statebus/launch?code=…``, which turns a one-time launch code into that cookie.

No owner page, no login, no metrics, no peer routes; an ``Authorization`` header is refused.

Rules:
    1. Every answer on an app's origin carries :func:`app_policy` (a strict CSP: scripts from the origin
       itself and inline scripts only by their hash, ``connect-src 'self'``, ``frame-ancestors
       'none'``), ``nosniff`` and ``Referrer-Policy: no-referrer``. A value served there keeps its own
       headers (``CSP: sandbox``, attachment) too: values stay data.
    2. A ``Host`` that names no installed app (``evil.localhost``) gets 404: the node's API and page
       are never served on a subdomain.
    3. No service worker: a request for one (``Service-Worker: script``) gets 403, so nothing an app
       installs in the browser outlives its removal or serves a later app of the same name.
    4. The capability reaches the page only through the launch: the owner, logged in on the node's
       page, follows ``/launch/<name>`` there; the node mints a launch code (single use, 60 s) and
       redirects to the app's origin, which sets the capability as an HttpOnly, SameSite=Strict
       cookie without ``Domain`` (``__Host-`` and Secure over TLS).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statebus.apps.patterns import Grants
from statebus.config import Settings
from statebus.errors import Forbidden, NotFound, StatebusError, Unauthorized
from statebus.http.auth import APP_SCOPE, OwnerAuth
from statebus.http.errors import error_response, statebus_error_response
from statebus.http.info import INFO_PATH
from statebus.http.origins import WEB_SCHEMES
from statebus.http.websocket import WS_PATH
from statebus.keys import is_pubkey

APP_NAME: Final = re.compile(r"[a-z][a-z0-9-]{0,31}")
LOCALHOST: Final = "localhost"
LAUNCH_PATH: Final = "/.statebus/launch"
LAUNCH_ROUTE: Final = "/launch/{name}"
STATUS_PATH: Final = "/.well-known/statebus/app-origins"
SCRIPT_PATH: Final = "/statebus.js"
INDEX_FILE: Final = "index.html"
MAX_HASHED_SCRIPTS: Final = 64
MAX_POLICIES: Final = 4096
"""HTML pages whose policy (with their inline scripts' hashes) is remembered at once."""
_INLINE_SCRIPT: Final = re.compile(rb"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_SRC_ATTR: Final = re.compile(rb"\bsrc\s*=", re.IGNORECASE)


class InstalledWeb(Protocol):
    """What the origin needs of an installed app (``statebus.apps.registry.InstalledApp``)."""

    @property
    def name(self) -> str: ...

    @property
    def bundle_hash(self) -> str: ...

    @property
    def granted(self) -> Grants: ...

    def web_file(self, path: str) -> tuple[bytes, str] | None: ...


class AppDirectory(Protocol):
    """The installed apps (``statebus.apps.registry.AppRegistry``)."""

    def get(self, name: str) -> InstalledWeb | None: ...

    def list(self) -> Sequence[InstalledWeb]: ...


class AppStatusLike(Protocol):
    """One app's runtime state (``statebus.apps.handlers.AppStatus``)."""

    def to_json(self) -> dict[str, Any]: ...


class AppRunner(Protocol):
    """What runs the apps' handlers (``statebus.apps.handlers.AppHost``): its status per app."""

    def status(self) -> Sequence[AppStatusLike]: ...


class NoApps:
    """The directory of a node without installed apps."""

    def get(self, name: str) -> InstalledWeb | None:
        return None

    def list(self) -> Sequence[InstalledWeb]:
        return []


def inline_script_hashes(html: bytes) -> list[str]:
    """``'sha256-…'`` sources of the inline ``<script>`` bodies of an HTML file (at most 64). A body
    this scan reads differently from the browser gets a hash the browser does not match: it does not
    run (the policy fails closed)."""
    out: list[str] = []
    for match in _INLINE_SCRIPT.finditer(html):
        if _SRC_ATTR.search(match.group(1)) or len(out) >= MAX_HASHED_SCRIPTS:
            continue
        digest = base64.b64encode(hashlib.sha256(match.group(2)).digest()).decode("ascii")
        out.append(f"'sha256-{digest}'")
    return out


def app_policy(script_hashes: Iterable[str] = ()) -> str:
    """The Content-Security-Policy of every answer on an app's origin (rule 1)."""
    scripts = " ".join(["'self'", *script_hashes])
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; font-src 'self'; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


BASE_POLICY: Final = app_policy()


HOST_MEMO = 256
"""How many distinct ``Host`` values :meth:`AppOrigins.app_of` remembers (then it starts over)."""


def _split_host(host: str) -> tuple[str, str]:
    """``(hostname, ":port" or "")`` of a Host header."""
    if host.endswith("]") or ":" not in host:
        return host, ""
    name, _, port = host.rpartition(":")
    return name, ":" + port


class AppOrigins:
    """Serves installed apps on their own origins; the node app hands it every request whose ``Host``
    names one (:meth:`app_of`).

    Args:
        settings: the public hosts (``public_origins``, ``public_addresses``) whose subdomains are apps.
        auth: the node's owner check (the launch route is the owner's) and capability check.
        apps: the installed apps (swap with :meth:`use`).
        script: the node's ``statebus.js``, served on every app's origin (None: not served).
    """

    def __init__(
        self,
        settings: Settings,
        auth: OwnerAuth,
        apps: AppDirectory | None = None,
        script: Path | None = None,
    ) -> None:
        self.auth = auth
        self.apps: AppDirectory = apps if apps is not None else NoApps()
        self.runner: AppRunner | None = None
        self.script = script
        self.node_app: ASGIApp | None = None
        hosts = [urlsplit(o).hostname or "" for o in settings.public_origins]
        hosts += [a.rpartition(":")[0] for a in settings.public_addresses]
        names = {h.lower() for h in hosts if h and ":" not in h and not h.replace(".", "").isdigit()}
        self.suffixes: tuple[str, ...] = tuple(sorted("." + h for h in names))
        self._policies: dict[tuple[str, str, str], str] = {}
        self._hosts: dict[bytes, str | None] = {}
        """What :meth:`app_of` answered for each raw ``Host`` value seen (at most ``HOST_MEMO``):
        a node is reached under a few names, and every request asks."""

    def use(self, apps: AppDirectory, runner: AppRunner | None = None) -> None:
        """Serve ``apps`` from now on (the registry, once the node has one); ``runner`` reports
        their handlers' state on the node's page."""
        self.apps = apps
        self.runner = runner
        self._policies.clear()

    def installed(self, name: str) -> InstalledWeb | None:
        """The installed app ``name``, or None (not installed, or its bundle no longer checks out)."""
        if not name:
            return None
        try:
            return self.apps.get(name)
        except StatebusError:
            return None

    # ------------------------------------------------------------------ routing

    def app_of(self, scope: Scope) -> str | None:
        """The app whose origin ``scope`` reached (``""`` for a subdomain that is no valid app name),
        or None for the node's own origin."""
        value: bytes | None = None
        for name, raw in scope["headers"]:
            if name == b"host":
                value = raw if type(raw) is bytes else bytes(raw)
                break
        if value is None:
            return None
        hosts = self._hosts
        if value in hosts:
            return hosts[value]
        if len(hosts) >= HOST_MEMO:
            hosts.clear()
        found = hosts[value] = self._app_of_host(value.decode("latin-1").lower())
        return found

    def _app_of_host(self, host: str) -> str | None:
        if "." not in host:
            return None
        hostname = _split_host(host)[0].rstrip(".")
        if hostname.endswith("." + LOCALHOST):
            label = hostname[: -len(LOCALHOST) - 1]
        else:
            for suffix in self.suffixes:
                if hostname.endswith(suffix):
                    label = hostname[: -len(suffix)]
                    break
            else:
                return None
        return label if APP_NAME.fullmatch(label) else ""

    def origin_for(self, scope: Scope, headers: Mapping[str, str], name: str) -> str:
        """The origin of app ``name`` as seen from a request to the node (its scheme and port kept):
        ``<name>.<host>`` when the request reached a public host, else ``<name>.localhost``."""
        hostname, port = _split_host(headers.get("host", "").lower())  # no port: the scheme's default
        secure = self.auth.origins.is_secure(scope, headers)
        scheme = "https" if secure else WEB_SCHEMES.get(str(scope.get("scheme", "http")), "http")
        if port in (":80", ":443") and port == (":443" if scheme == "https" else ":80"):
            port = ""
        if hostname and "." + hostname in self.suffixes:
            return f"{scheme}://{name}.{hostname}{port}"
        return f"{scheme}://{name}.{LOCALHOST}{port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        scope[APP_SCOPE] = name
        if scope["type"] == "websocket":
            if scope["path"] == WS_PATH and self.node_app is not None and self.installed(name):
                await self.node_app(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        sender = _with_policy(send, BASE_POLICY)
        app = self.installed(name)
        path: str = scope["path"]
        first = path.split("/", 2)[1] if path.startswith("/") else ""
        if app is None:
            response = error_response(404, "not_found", "no app of that name is installed on this node")
        elif path == LAUNCH_PATH:
            response = self.redeem(scope, name)
        elif (path == INFO_PATH or first == "~" or is_pubkey(first)) and self.node_app is not None:
            await self.node_app(scope, receive, sender)  # the key API, as this app's capability
            return
        else:
            response, policy = self.web(scope, name, app)
            sender = _with_policy(send, policy)
        await response(scope, receive, sender)

    def web(self, scope: Scope, name: str, app: InstalledWeb) -> tuple[Response, str]:
        """A web file of ``app`` (or ``/statebus.js``) and the policy to serve it with: an HTML page
        gets the hashes of its inline scripts in ``script-src``."""
        path: str = scope["path"]
        method = str(scope["method"]).upper()
        if method not in ("GET", "HEAD"):
            return error_response(405, "method_not_allowed", "an app's web files are read only"), BASE_POLICY
        if any(k == b"service-worker" for k, _ in scope["headers"]):
            detail = "apps may not install service workers (they would outlive the app on its origin)"
            return error_response(403, "forbidden", detail), BASE_POLICY
        if path == SCRIPT_PATH and self.script is not None and self.script.is_file():
            return FileResponse(self.script, media_type="text/javascript; charset=utf-8"), BASE_POLICY
        rel = path.lstrip("/")
        if rel == "" or rel.endswith("/"):
            rel += INDEX_FILE
        found = app.web_file(rel)
        if found is None:
            return error_response(404, "not_found", f"app {name} has no file {rel}"), BASE_POLICY
        body, content_type = found
        response = Response(body if method == "GET" else b"", media_type=content_type)
        if method == "HEAD":
            response.headers["content-length"] = str(len(body))
        response.headers["cache-control"] = "no-cache"
        if content_type.split(";")[0].strip().lower() not in ("text/html", "application/xhtml+xml"):
            return response, BASE_POLICY
        key = (name, app.bundle_hash, rel)
        policy = self._policies.get(key)
        if policy is None:
            if len(self._policies) > MAX_POLICIES:
                self._policies.clear()
            policy = self._policies[key] = app_policy(inline_script_hashes(body))
        return response, policy

    # ------------------------------------------------------------------ the launch

    def redeem(self, scope: Scope, name: str) -> Response:
        """``GET /.statebus/launch?code=…`` on the app's origin: a live launch code of this app sets
        its capability cookie and redirects to ``/``; anything else is 401 and sets nothing."""
        access = self.auth.access
        codes = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("code", [])
        request = Request(scope)
        cookie = self.auth.app_cookie_name(scope, request.headers)
        secret = access.capabilities.redeem(codes[0], name) if access and len(codes) == 1 else None
        if secret is None or cookie is None:
            return statebus_error_response(
                Unauthorized(
                    "the launch link is not valid (used, expired or another app's): open the app again"
                    " from the node's page"
                )
            )
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            cookie, secret, path="/", httponly=True, samesite="strict", secure=cookie.startswith("__Host-")
        )
        response.headers["cache-control"] = "no-store"
        return response

    async def launch(self, request: Request) -> Response:
        """``GET /launch/<name>`` on the node's origin (the owner only): mint a launch code and
        redirect to the app's origin, which redeems it."""
        name = str(request.path_params.get("name", ""))
        try:
            client = self.auth.authenticate(request)
            if not client.owner or client.app is not None:
                raise Unauthorized("only the node's owner launches apps: log in first")
            if self.auth.origins.foreign_origin(request.scope, request.headers):
                raise Forbidden("apps are launched from the node's own page")
            app = self.installed(name) if APP_NAME.fullmatch(name) else None
            if app is None or self.auth.access is None:
                raise NotFound(f"no app named {name!r} is installed on this node")
        except StatebusError as exc:
            return statebus_error_response(exc)
        code = self.auth.access.capabilities.launch_code(name, app.bundle_hash, app.granted)
        origin = self.origin_for(request.scope, request.headers, name)
        response = RedirectResponse(f"{origin}{LAUNCH_PATH}?code={quote(code)}", status_code=303)
        response.headers["cache-control"] = "no-store"
        response.headers["referrer-policy"] = "no-referrer"
        return response

    async def status(self, request: Request) -> Response:
        """``GET /.well-known/statebus/app-origins`` (the owner only): what the node's page lists per
        installed app: its version, grants, origin, launch link, live capabilities and, with a
        runner, its handlers' state (running / trapped and why), call count and costs."""
        try:
            client = self.auth.authenticate(request)
            if not client.owner:
                raise Unauthorized("only the node's owner sees its apps")
        except StatebusError as exc:
            return statebus_error_response(exc)
        runtime: dict[str, dict[str, Any]] = {}
        if self.runner is not None:
            for st in self.runner.status():
                entry = st.to_json()
                runtime[str(entry.get("name"))] = entry
        caps = self.auth.access.capabilities if self.auth.access is not None else None
        out = []
        for app in self.apps.list():
            manifest = getattr(app, "manifest", None)
            out.append(
                {
                    "name": app.name,
                    "version": getattr(manifest, "version", None),
                    "description": getattr(manifest, "description", None),
                    "hash": app.bundle_hash,
                    "granted": app.granted.to_json(),
                    "origin": self.origin_for(request.scope, request.headers, app.name),
                    "launch": LAUNCH_ROUTE.replace("{name}", app.name),
                    "capabilities": caps.live(app.name) if caps is not None else 0,
                    "runtime": runtime.get(app.name),
                }
            )
        return JSONResponse({"apps": out}, headers={"cache-control": "no-store"})

    def routes(self) -> Sequence[BaseRoute]:
        """The node-origin routes: ``/launch/<name>`` and the owner's apps status."""
        return [
            Route(LAUNCH_ROUTE, self.launch, methods=["GET"]),
            Route(STATUS_PATH, self.status, methods=["GET"]),
        ]


def _with_policy(send: Send, policy: str) -> Send:
    """``send`` adding the app origin's headers (rule 1) to the response start."""

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[Any] = list(message.get("headers", []))
            names = {n.lower() for n, _ in headers}
            headers.append((b"content-security-policy", policy.encode("ascii")))
            if b"x-content-type-options" not in names:
                headers.append((b"x-content-type-options", b"nosniff"))
            if b"referrer-policy" not in names:
                headers.append((b"referrer-policy", b"no-referrer"))
            headers.append((b"cross-origin-opener-policy", b"same-origin"))
            message = {**message, "headers": headers}
        await send(message)

    return sender
