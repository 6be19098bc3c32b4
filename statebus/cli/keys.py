"""Sub-keys and delegation from the command line, and writing as a delegated key.

    statebus keys derive LABEL [--out FILE]     the sub-key for LABEL (SLIP-0010); --out: its key file
    statebus keys list                          the delegation records in /~/.keys/ and their state
    statebus delegate PUBKEY [--scope S …]      let PUBKEY write under the scopes (a signed record)
    statebus revoke PUBKEY [--reason TEXT]      take that back
    statebus put|delete … --as KEYFILE          write as that key (a signed op in a signed request)

Records are signed with the node identity from the data folder and stored with the owner token, at
``/<owner>/.keys/<delegate>`` (:func:`statebus.identity.record_key`). Secrets are never printed.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx

from statebus.cli.client import (
    INFO_PATH,
    TIMEOUT,
    Client,
    check,
    client_for,
    key_path,
    parse_value,
    transport_error,
)
from statebus.cli.options import add_common
from statebus.cli.signed import load_key_file, write_as, write_key_file
from statebus.config import Settings
from statebus.errors import InvalidValue, NotFound, StatebusError
from statebus.identity import Identity, Record, delegate, derive, keystore, parse_record, record_key, revoke
from statebus.keys import is_pubkey
from statebus.types import PubKey

_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# ---------------------------------------------------------------------- helpers


def _node_identity(settings: Settings) -> Identity:
    try:
        return keystore.load(settings.data_dir)
    except NotFound:
        raise NotFound(
            f"no node identity in {settings.data_dir}: run `statebus init` or `statebus serve` first"
        ) from None


def _owner_client(args: argparse.Namespace, settings: Settings) -> tuple[Identity, Client]:
    """The node identity and an owner client, after checking the node at --url is that identity."""
    identity = _node_identity(settings)
    client = client_for(settings, args.url)
    request = client.http.build_request("GET", INFO_PATH)
    request.headers.pop("Authorization", None)  # anyone may ask who the node is; a stale token may not
    try:
        response = client.http.send(request)
    except httpx.HTTPError as exc:
        client.http.close()
        raise transport_error(client.url, exc) from None
    check(response)
    node = response.json().get("node")
    if node != identity.pubkey:
        client.http.close()
        raise InvalidValue(
            f"the node at {client.url} is {node}, but the identity in {settings.data_dir} is "
            f"{identity.pubkey}: pass the --url or --data of the same node"
        )
    return identity, client


def parse_when(text: str, now: float | None = None) -> int:
    """Unix seconds from ``SECONDS`` (from now, with an optional s/m/h/d/w unit) or an ISO 8601 date."""
    base = time.time() if now is None else now
    m = _DURATION.match(text.strip())
    if m:
        return int(base) + int(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidValue(
            f"{text!r} is neither a number of seconds (e.g. 3600, 30d) nor a date (e.g. 2027-01-31)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def _scope(owner: PubKey, text: str) -> str:
    """``/~/chirp/``, ``chirp`` or ``/<owner>/chirp`` → ``/<owner>/chirp/``."""
    s = text.strip()
    if s.startswith("/~/") or s == "/~":
        s = f"/{owner}/" + s[3:]
    elif not s.startswith("/"):
        s = f"/{owner}/{s}"
    return s if s.endswith("/") else s + "/"


def _delegate_key(text: str) -> PubKey:
    if not is_pubkey(text):
        raise InvalidValue(
            f"{text[:60]!r} is not a public key (52 base32 characters; see `statebus keys derive`)"
        )
    return text


def _current_record(client: Client, owner: PubKey, delegate_key: PubKey) -> Record | None:
    try:
        value = client.request("GET", _url(owner, record_key(owner, delegate_key))).json()
    except StatebusError as exc:
        if exc.status_hint == 404:
            return None
        raise
    try:
        return parse_record(value, record_key(owner, delegate_key))
    except StatebusError:
        return None


def _url(owner: PubKey, key: str) -> str:
    return "/~" + key[len(owner) + 1 :] if key.startswith(f"/{owner}/") else key


def _store(client: Client, owner: PubKey, record: Record) -> None:
    client.request("PUT", _url(owner, record.key), json=record.to_json())


def _issued(current: Record | None) -> int:
    """A counter above the current record's: the time in milliseconds, or one more than it."""
    now_ms = int(time.time() * 1000)
    return max(now_ms, current.issued + 1) if current is not None else now_ms


def _local(owner: PubKey, key: str) -> str:
    return "/~/" + key[len(owner) + 2 :] if key.startswith(f"/{owner}/") else key


def _state(record: Record, now: float) -> str:
    if record.revoked:
        return "revoked" + (f" ({record.reason})" if record.reason else "")
    return (
        "expired"
        if record.expires is not None and now >= record.expires
        else ("not yet valid" if now < record.not_before else "active")
    )


def _date(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- commands


def cmd_derive(args: argparse.Namespace, settings: Settings) -> int:
    sub = derive(_node_identity(settings), args.label)
    if args.out:
        path = write_key_file(args.out, sub)
        sys.stderr.write(f"wrote the secret key of {args.label} to {path} (mode 0600); keep it private\n")
    sys.stdout.write(sub.pubkey + "\n")
    return 0


def cmd_delegate(args: argparse.Namespace, settings: Settings) -> int:
    target = _delegate_key(args.pubkey)
    identity, client = _owner_client(args, settings)
    with client:
        owner = identity.pubkey
        scopes = [_scope(owner, s) for s in args.scope] if args.scope else None
        not_before = parse_when(args.not_before) if args.not_before else 0
        expires = parse_when(args.expires) if args.expires else None
        issued = _issued(_current_record(client, owner, target))
        record = delegate(identity, target, scopes, issued=issued, not_before=not_before, expires=expires)
        _store(client, owner, record)
    until = f" until {_date(expires)}" if expires is not None else ""
    sys.stdout.write(f"delegated {', '.join(_local(owner, s) for s in record.scopes)} to {target}{until}\n")
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    target = _delegate_key(args.pubkey)
    identity, client = _owner_client(args, settings)
    with client:
        current = _current_record(client, identity.pubkey, target)
        if current is None:
            sys.stderr.write(f"statebus: note: {target} holds no delegation; storing the revocation anyway\n")
        record = revoke(identity, target, issued=_issued(current), reason=args.reason or "")
        _store(client, identity.pubkey, record)
    sys.stdout.write(f"revoked {target}\n")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    identity, client = _owner_client(args, settings)
    owner, now = identity.pubkey, time.time()
    with client:
        names: list[str] = []
        body = client.request("GET", "/~/.keys/").json()
        names.extend(body.get("children", []))
        while body.get("next"):
            body = client.request("GET", "/~/.keys/", params={"after": body["next"]}).json()
            names.extend(body.get("children", []))
        for name in names:
            if name.endswith("/") or not is_pubkey(name):
                continue
            record = _current_record(client, owner, name)
            if record is None:
                sys.stdout.write(f"{name}  invalid record\n")
                continue
            scopes = ",".join(_local(owner, s) for s in record.scopes) or "-"
            expires = _date(record.expires) if record.expires is not None else "never"
            sys.stdout.write(f"{name}  {_state(record, now)}  scopes={scopes}  expires={expires}\n")
    return 0


def _as_writer(original: Callable[..., int], kind: str) -> Callable[[argparse.Namespace, Settings], int]:
    """``put``/``delete``: as before without ``--as``; with it, a signed op of the key file's key."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        client = client_for(settings, args.url)
        if args.as_key is None:
            with client:
                return original(args, settings, client)
        client.http.close()
        return _write_as(args, client.url, kind)

    return run


def _write_as(args: argparse.Namespace, url: str, kind: str) -> int:
    me = load_key_file(args.as_key)
    path = key_path(args.key)
    if path.endswith("/"):
        raise InvalidValue(f"{kind} names one key, not a subtree (no trailing '/')")
    if getattr(args, "merge_type", None) not in (None, "lww"):
        raise InvalidValue("--as writes lww keys (JSON or bytes values); yjs updates are not supported")
    with httpx.Client(base_url=url, timeout=TIMEOUT, trust_env=False) as http:
        try:
            info = http.get(INFO_PATH)
        except httpx.HTTPError as exc:
            raise transport_error(url, exc) from None
        check(info)
        node = info.json().get("node")
        key = urllib.parse.unquote(path)
        if key.startswith("/~/"):
            key = f"/{node}/" + key[3:]
        value: Any = None
        content_type = None
        if kind == "set":
            if args.content_type:
                content_type = args.content_type
                value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode("utf-8")
            else:
                value = parse_value(args.value)
        parents = (
            tuple(p.strip() for p in args.parents.split(",") if p.strip())
            if getattr(args, "parents", None)
            else None
        )
        version = write_as(
            http,
            me,
            key,
            value,
            path=path,
            kind=kind,
            content_type=content_type,
            patch_range=getattr(args, "range", None),
            version=getattr(args, "version", None),
            parents=parents,
        )
    if kind == "set":
        sys.stdout.write(version + "\n")
    return 0


# ---------------------------------------------------------------------- the parser


def register(sub: Any) -> None:
    """Add ``keys``, ``delegate`` and ``revoke`` to the ``statebus`` parser, and ``--as`` to put/delete."""
    keys = sub.add_parser(
        "keys",
        help="derive sub-keys and list delegations",
        description="Sub-keys of the node identity (SLIP-0010) and the delegations stored in /~/.keys/.",
    )
    ksub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    p = ksub.add_parser(
        "derive",
        help="print the sub-key for a label (and write its key file)",
        description="Derive the sub-key for LABEL from the node identity (SLIP-0010, deterministic: the same "
        "label always gives the same key) and print its public key. --out writes its secret key to a new "
        "file (mode 0600) for the device or app that will use it; the secret is never printed.",
    )
    p.add_argument("label", metavar="LABEL", help="e.g. laptop, app/chirp (segments of [A-Za-z0-9._~-])")
    p.add_argument("--out", metavar="FILE", help="write the key file here (never overwrites)")
    add_common(p, client=False)
    p.set_defaults(func=cmd_derive)
    p = ksub.add_parser("list", help="list the delegation records in /~/.keys/ and their state")
    add_common(p, client=True)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "delegate",
        help="let a key write part of this namespace",
        description="Sign a delegation of PUBKEY with the node identity and store it at /~/.keys/PUBKEY "
        "on the running node. It replaces the key's previous record (a revoked key can be delegated again).",
    )
    p.add_argument("pubkey", metavar="PUBKEY", help="the delegate's public key (see `statebus keys derive`)")
    p.add_argument(
        "--scope",
        action="append",
        metavar="PREFIX",
        help="a key prefix it may write, e.g. /~/chirp/ (repeatable; default: the whole namespace)",
    )
    p.add_argument(
        "--expires", metavar="SECONDS|DATE", help="end of validity: seconds from now (3600, 30d) or a date"
    )
    p.add_argument(
        "--not-before", dest="not_before", metavar="SECONDS|DATE", help="start of validity (default: at once)"
    )
    add_common(p, client=True)
    p.set_defaults(func=cmd_delegate)

    p = sub.add_parser(
        "revoke",
        help="take a key's delegation back",
        description="Sign a revocation of PUBKEY and store it at /~/.keys/PUBKEY: its next write is refused.",
    )
    p.add_argument("pubkey", metavar="PUBKEY", help="the delegate's public key")
    p.add_argument("--reason", metavar="TEXT", help="why (stored in the record, shown to the key)")
    add_common(p, client=True)
    p.set_defaults(func=cmd_revoke)

    for name, kind in (("put", "set"), ("delete", "delete")):
        parser = sub.choices.get(name)
        if parser is None:
            continue
        parser.add_argument(
            "--as",
            dest="as_key",
            metavar="KEYFILE",
            help="write as this key (a delegated key file): a signed op in a signed request",
        )
        parser.set_defaults(func=_as_writer(parser.get_default("func"), kind))


__all__ = ["cmd_delegate", "cmd_derive", "cmd_list", "cmd_revoke", "parse_when", "register"]
