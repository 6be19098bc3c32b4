"""``statebus keys derive/list``, ``delegate``, ``revoke`` and ``put/delete --as`` against a real
``statebus serve --port 0`` process: a derived key is delegated a scope, writes inside it, is refused
outside it and after its revocation, and its secret never shows in any output."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statebus.cli import main
from statebus.cli.signed import load_key_file, next_clock, parse_versions
from statebus.identity import derive, keystore
from tests.support.served import ServedNode


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


Served = ServedNode


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("keys-node"))
    try:
        yield served
    finally:
        served.close()


def cli(capsys: pytest.CaptureFixture[str], node: Served, *argv: str) -> tuple[int, str, str]:
    client = argv[0] not in ("keys",) or argv[1] == "list"
    extra = ["--data", str(node.data)] + (["--url", node.url] if client else [])
    return run(capsys, *argv, *extra)


def owner_get(node: Served, path: str) -> httpx.Response:
    token = keystore.load_owner_token(node.data)
    return httpx.get(node.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_derive_is_deterministic_and_writes_a_private_key_file(node, tmp_path, capsys):
    code, out1, err = cli(capsys, node, "keys", "derive", "laptop")
    assert code == 0, err
    assert cli(capsys, node, "keys", "derive", "laptop")[1] == out1
    other = cli(capsys, node, "keys", "derive", "phone")[1]
    pub = out1.strip()
    assert other.strip() != pub and len(pub) == 52
    assert pub == derive(keystore.load(node.data), "laptop").pubkey
    keyfile = tmp_path / "laptop.key"
    code, out, err = cli(capsys, node, "keys", "derive", "laptop", "--out", str(keyfile))
    assert code == 0 and out == out1, err
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert load_key_file(keyfile).pubkey == pub
    secret = json.loads(keyfile.read_text())["secret"]
    assert secret not in out + err
    # never overwritten
    before = keyfile.read_bytes()
    code, out, err = cli(capsys, node, "keys", "derive", "phone", "--out", str(keyfile))
    assert code == 1 and out == "" and err.count("\n") == 1 and "already exists" in err
    assert keyfile.read_bytes() == before
    # a bad label is one line
    code, _, err = cli(capsys, node, "keys", "derive", "no spaces")
    assert code == 1 and err.count("\n") == 1


def test_a_key_file_others_can_read_is_refused(node, tmp_path, capsys):
    keyfile = tmp_path / "open.key"
    cli(capsys, node, "keys", "derive", "open", "--out", str(keyfile))
    keyfile.chmod(0o644)
    code, _, err = cli(capsys, node, "put", "/~/chirp/x", "1", "--as", str(keyfile))
    assert code == 1 and "chmod 600" in err and err.count("\n") == 1


def test_delegate_write_in_scope_refuse_outside_revoke(node, tmp_path: Path, capsys):
    keyfile = tmp_path / "app.key"
    code, out, err = cli(capsys, node, "keys", "derive", "app/chirp", "--out", str(keyfile))
    assert code == 0, err
    pub = out.strip()
    secret = json.loads(keyfile.read_text())["secret"]
    outputs = [out, err]

    # not delegated yet: refused
    code, out, err = cli(capsys, node, "put", "/~/chirp/1", '"early"', "--as", str(keyfile))
    assert code == 1 and err.count("\n") == 1 and pub in err
    outputs += [out, err]

    code, out, err = cli(capsys, node, "delegate", pub, "--scope", "/~/chirp/", "--expires", "30d")
    assert code == 0 and "/~/chirp/" in out, err
    outputs += [out, err]
    record = owner_get(node, f"/~/.keys/{pub}").json()
    assert record["type"] == "statebus/delegation" and record["scopes"][0].endswith("/chirp/")

    # inside the scope: stored, authored by the key, readable by the owner; a second write follows it
    code, out, err = cli(capsys, node, "put", "/~/chirp/1", '{"text": "hi"}', "--as", str(keyfile))
    assert code == 0, err
    first = out.strip()
    outputs += [out, err]
    r = owner_get(node, "/~/chirp/1")
    assert r.json() == {"text": "hi"} and parse_versions(r.headers["version"]) == (first,)
    code, out, err = cli(capsys, node, "put", "chirp/1", '"second"', "--as", str(keyfile))
    assert code == 0, err
    assert owner_get(node, "/~/chirp/1").json() == "second"
    assert int(out.split("-")[0]) == next_clock((first,))
    # the owner writes on top, the key writes over that again (its clock is above the owner's)
    assert cli(capsys, node, "put", "/~/chirp/1", '"owner"')[0] == 0
    assert cli(capsys, node, "put", "/~/chirp/1", '"key again"', "--as", str(keyfile))[0] == 0
    assert owner_get(node, "/~/chirp/1").json() == "key again"

    # outside the scope: one line, nothing stored
    code, out, err = cli(capsys, node, "put", "/~/other/1", '"no"', "--as", str(keyfile))
    assert (
        code == 1
        and out == ""
        and err.count("\n") == 1
        and "does not cover" in err
        and "may not write" in err
    )
    assert owner_get(node, "/~/other/1").status_code == 404
    outputs += [out, err]

    code, out, err = cli(capsys, node, "keys", "list")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith(pub))
    assert " active " in line and "scopes=/~/chirp/" in line and "expires=never" not in line

    # a delete is a signed op too
    assert cli(capsys, node, "put", "/~/chirp/2", "2", "--as", str(keyfile))[0] == 0
    code, _, err = cli(capsys, node, "delete", "/~/chirp/2", "--as", str(keyfile))
    assert code == 0, err
    assert owner_get(node, "/~/chirp/2").status_code == 404

    code, out, err = cli(capsys, node, "revoke", pub, "--reason", "laptop stolen")
    assert code == 0 and pub in out, err
    outputs += [out, err]
    code, out, err = cli(capsys, node, "put", "/~/chirp/1", '"after"', "--as", str(keyfile))
    assert code == 1 and err.count("\n") == 1 and "revoked" in err and "may not write" in err
    assert owner_get(node, "/~/chirp/1").json() == "key again"
    outputs += [out, err]

    code, out, err = cli(capsys, node, "keys", "list")
    line = next(ln for ln in out.splitlines() if ln.startswith(pub))
    assert "revoked (laptop stolen)" in line
    outputs += [out, err]

    # delegating again restores it (its issued counter is above the revocation's)
    assert cli(capsys, node, "delegate", pub, "--scope", "chirp")[0] == 0
    assert cli(capsys, node, "put", "/~/chirp/1", '"back"', "--as", str(keyfile))[0] == 0
    assert " active " in cli(capsys, node, "keys", "list")[1]
    assert all(secret not in text for text in outputs)
    assert secret not in node.stderr_path.read_text()


def test_delegate_checks_its_input(node, capsys):
    pub = derive(keystore.load(node.data), "bad-input").pubkey
    code, _, err = cli(capsys, node, "delegate", "not-a-key")
    assert code == 1 and "public key" in err and err.count("\n") == 1
    code, _, err = cli(capsys, node, "delegate", pub, "--expires", "someday")
    assert code == 1 and "someday" in err
    code, _, err = cli(capsys, node, "delegate", pub, "--scope", "/~/.keys/")
    assert code == 1 and ".keys" in err
    assert owner_get(node, f"/~/.keys/{pub}").status_code == 404


def test_delegate_refuses_another_nodes_identity(node, tmp_path, capsys):
    run(capsys, "init", "--data", str(tmp_path))
    pub = derive(keystore.load(node.data), "x").pubkey
    code, _, err = run(capsys, "delegate", pub, "--data", str(tmp_path), "--url", node.url)
    assert code == 1 and "--url or --data" in err


def test_expired_and_future_delegations(node, tmp_path, capsys):
    keyfile = tmp_path / "k.key"
    pub = cli(capsys, node, "keys", "derive", "future", "--out", str(keyfile))[1].strip()
    assert cli(capsys, node, "delegate", pub, "--scope", "/~/f/", "--not-before", "1d")[0] == 0
    line = next(ln for ln in cli(capsys, node, "keys", "list")[1].splitlines() if ln.startswith(pub))
    assert "not yet valid" in line
    code, _, err = cli(capsys, node, "put", "/~/f/1", "1", "--as", str(keyfile))
    assert code == 1 and "not valid before" in err
    code = cli(
        capsys,
        node,
        "delegate",
        pub,
        "--scope",
        "/~/f/",
        "--not-before",
        "2020-01-01",
        "--expires",
        "2020-01-02",
    )[0]
    assert code == 0
    line = next(ln for ln in cli(capsys, node, "keys", "list")[1].splitlines() if ln.startswith(pub))
    assert "expired" in line and "expires=2020-01-02T00:00:00Z" in line


@pytest.mark.parametrize("argv", [["keys"], ["keys", "derive"], ["keys", "list"], ["delegate"], ["revoke"]])
def test_new_commands_have_help(argv, capsys):
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0 and "usage: statebus" in out


def test_patch_bytes_and_named_versions_as_a_key(node, tmp_path, capsys):
    keyfile = tmp_path / "p.key"
    pub = cli(capsys, node, "keys", "derive", "patcher", "--out", str(keyfile))[1].strip()
    assert cli(capsys, node, "delegate", pub, "--scope", "/~/p/")[0] == 0
    assert cli(capsys, node, "put", "/~/p/doc", '{"tags": ["a"]}', "--as", str(keyfile))[0] == 0
    code, _, err = cli(
        capsys, node, "put", "/~/p/doc", '["b"]', "--range", ".tags[1:1]", "--as", str(keyfile)
    )
    assert code == 0, err
    assert owner_get(node, "/~/p/doc").json() == {"tags": ["a", "b"]}
    code, _, err = cli(
        capsys, node, "put", "/~/p/readme", "plain text", "--content-type", "text/plain", "--as", str(keyfile)
    )
    assert code == 0, err
    r = owner_get(node, "/~/p/readme")
    assert r.content == b"plain text" and r.headers["content-type"].startswith("text/plain")
    # the owner names a version (no clock in it): the key's next write still comes out on top
    assert cli(capsys, node, "put", "/~/p/doc", '"owner"', "--version", "mine")[0] == 0
    code, out, err = cli(capsys, node, "put", "/~/p/doc", '"key"', "--as", str(keyfile))
    assert code == 0 and int(out.split("-")[0]) >= int(time.time()) - 60, err
    assert owner_get(node, "/~/p/doc").json() == "key"
    code, _, err = cli(capsys, node, "put", "/~/p/y", "{}", "--merge-type", "yjs", "--as", str(keyfile))
    assert code == 1 and "yjs" in err
