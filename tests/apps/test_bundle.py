"""Bundles: deterministic packing, signatures (author and delegated key), and every refusal."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from statebus.apps.bundle import Signature, bundle_hash, open_bundle, pack, sign
from statebus.apps.patterns import Grants
from statebus.errors import InvalidBundle, TooLarge
from statebus.identity import Identity, delegate, derive
from tests.apps.bundles import GUESTBOOK, MAX, app_copy, author_key


@pytest.fixture
def author() -> Identity:
    return author_key()


@pytest.fixture
def app_dir(tmp_path: Path, author: Identity) -> Path:
    return app_copy(tmp_path / "guestbook", author)


def test_pack_is_deterministic(app_dir: Path, tmp_path: Path, author: Identity) -> None:
    first = pack(app_dir, MAX)
    other = app_copy(tmp_path / "elsewhere", author)
    for f in other.rglob("*"):  # other times, other modes, another folder name
        os.utime(f, (1_700_000_000, 1_700_000_000))
        if f.is_file():
            f.chmod(0o600)
    (other / ".git").mkdir()
    (other / ".git" / "HEAD").write_text("ignored")
    assert pack(other, MAX) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "statebus-app.json" in names and "web/index.html" in names
    assert {(m.mtime, m.uid, m.gid, m.mode, m.uname, m.type) for m in members} == {(0, 0, 0, 0o644, "", b"0")}


def test_sign_and_open(app_dir: Path, author: Identity) -> None:
    data = pack(app_dir, MAX)
    sig = sign(data, author)
    bundle = open_bundle(data, Signature.parse(json.dumps(sig.to_json())), MAX)
    assert bundle.hash == bundle_hash(data) == sig.hash
    assert bundle.manifest.name == "guestbook" and bundle.manifest.author == author.pubkey
    spec = bundle.spec(bundle.manifest.permissions)
    assert spec.validate == {"guestbook/entries/*": "validateEntry"}
    assert spec.schemas["guestbook/entries/*"]["required"] == ["name", "text"]
    assert spec.handler_source is not None and "function validateEntry" in spec.handler_source


def test_tampered_bundle_is_refused(app_dir: Path, author: Identity) -> None:
    data = pack(app_dir, MAX)
    sig = sign(data, author)
    i = data.index(b"MAX_TEXT = 500")
    tampered = data[:i] + b"MAX_TEXT = 5e6" + data[i + 14 :]
    with pytest.raises(InvalidBundle, match="tampered"):
        open_bundle(tampered, sig, MAX)
    with pytest.raises(InvalidBundle, match="published as"):
        open_bundle(data, sig, MAX, expect_hash="0" * 64)


def test_signed_by_another_key_is_refused(app_dir: Path, author: Identity) -> None:
    data = pack(app_dir, MAX)
    mallory = author_key("mallory")
    with pytest.raises(InvalidBundle, match="not by its author"):
        sign(data, mallory)
    forged = Signature(bundle_hash(data), "guestbook", "1.0.0", author.pubkey, mallory.sign(b"x" * 10))
    with pytest.raises(InvalidBundle, match="does not verify"):
        open_bundle(data, forged, MAX)
    # a valid author signature lifted onto another bundle of the same name and version
    other = pack(app_copy(app_dir.parent / "other", author, description="another"), MAX)
    with pytest.raises(InvalidBundle, match="tampered"):
        open_bundle(other, sign(data, author), MAX)


def test_delegated_app_key_signs(app_dir: Path) -> None:
    root = Identity(b"\x07" * 32, chain_code=b"\x08" * 32)
    app_key = derive(root, "app/guestbook")
    data = pack(app_copy(app_dir.parent / "mine", root), MAX)
    record = delegate(root, app_key.pubkey, [f"/{root.pubkey}/.apps/"], issued=1)
    bundle = open_bundle(data, sign(data, app_key, delegation=record.to_json()), MAX)
    assert bundle.signature.signer == app_key.pubkey
    narrow = delegate(root, app_key.pubkey, [f"/{root.pubkey}/chirp/"], issued=2)
    with pytest.raises(InvalidBundle, match="does not cover"):
        sign(data, app_key, delegation=narrow.to_json())
    someone = author_key("someone")
    foreign = delegate(someone, app_key.pubkey, [f"/{someone.pubkey}/.apps/"], issued=1)
    with pytest.raises(InvalidBundle, match="delegation is refused"):
        sign(data, app_key, delegation=foreign.to_json())
    with pytest.raises(InvalidBundle, match="no delegation"):
        sign(data, app_key)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Guest Book"}, "name"),
        ({"version": "one"}, "semantic version"),
        ({"author": "me"}, "author"),
        ({"permissions": {"read": ["/abs/"]}}, "leading"),
        ({"permissions": {"write": ["a/../b"]}}, r"'\.\.'"),
        ({"permissions": {"admin": ["x/"]}}, "unknown fields"),
        ({"scripts": "x"}, "unknown fields"),
        ({"handlers": {"source": "../../etc/passwd"}}, "bad segment"),
        ({"handlers": {"source": "server/missing.js"}}, "not in the bundle"),
        ({"permissions": {"write": ["other/"]}}, "outside its write grant"),
    ],
)
def test_bad_manifest_is_refused(
    app_dir: Path, author: Identity, change: dict[str, object], message: str
) -> None:
    manifest = json.loads((app_dir / "statebus-app.json").read_text())
    manifest.update(change)
    (app_dir / "statebus-app.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidBundle, match=message):
        pack(app_dir, MAX)


def test_manifest_that_is_not_json_is_refused(app_dir: Path) -> None:
    (app_dir / "statebus-app.json").write_text("{name: guestbook")
    with pytest.raises(InvalidBundle, match="not JSON"):
        pack(app_dir, MAX)


def _crafted(extra: tarfile.TarInfo, body: bytes = b"x") -> bytes:
    """The guestbook's files plus one hostile entry, as a hand-made (non-canonical) tar."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in sorted(GUESTBOOK.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=f.relative_to(GUESTBOOK).as_posix(), recursive=False)
        extra.size = len(body) if extra.isreg() else 0
        tar.addfile(extra, io.BytesIO(body) if extra.isreg() else None)
    return out.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry("../escape.js"), "bad segment"),
        (_entry("web/../../escape.js"), "bad segment"),
        (_entry("/etc/cron.d/x"), "not a relative bundle path"),
        (_entry("web/link", tarfile.SYMTYPE, "/etc/passwd"), "a symlink"),
        (_entry("web/hard", tarfile.LNKTYPE, "statebus-app.json"), "a hardlink"),
        (_entry("web/dev", tarfile.CHRTYPE), "a device"),
        (_entry("web/fifo", tarfile.FIFOTYPE), "a device"),  # tarfile counts a fifo as one
    ],
)
def test_hostile_entries_are_refused(entry: tarfile.TarInfo, message: str) -> None:
    data = _crafted(entry)
    author = author_key("repo")  # the check never gets as far as the signer
    sig = Signature(bundle_hash(data), "guestbook", "1.0.0", author.pubkey, b"\0" * 64)
    with pytest.raises(InvalidBundle, match=message):
        open_bundle(data, sig, MAX)


def test_non_canonical_archive_is_refused(app_dir: Path, author: Identity) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for f in sorted(app_dir.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=f.relative_to(app_dir).as_posix(), recursive=False)  # real mtimes
    data = out.getvalue()
    sig = Signature(bundle_hash(data), "guestbook", "1.0.0", author.pubkey, b"")
    sig = Signature(sig.hash, sig.name, sig.version, author.pubkey, author.sign(sig.signing_bytes()))
    with pytest.raises(InvalidBundle, match="not canonical"):
        open_bundle(data, sig, MAX)


def test_oversized_bundle_is_refused(app_dir: Path, author: Identity) -> None:
    data = pack(app_dir, MAX)
    with pytest.raises(TooLarge, match="app_bundle_max_bytes"):
        pack(app_dir, len(data) - 1)
    with pytest.raises(TooLarge):
        open_bundle(data, sign(data, author), len(data) - 1)
    (app_dir / "web" / "big.bin").write_bytes(b"\0" * 4096)
    with pytest.raises(TooLarge):
        pack(app_dir, 4000)


def test_pack_refuses_a_symlink(app_dir: Path) -> None:
    (app_dir / "web" / "secret").symlink_to("/etc/passwd")
    with pytest.raises(InvalidBundle, match="symlink"):
        pack(app_dir, MAX)


def test_grants_wider_than_asked_do_not_build(app_dir: Path, author: Identity) -> None:
    data = pack(app_dir, MAX)
    bundle = open_bundle(data, sign(data, author), MAX)
    narrow = Grants.parse(read=["guestbook/"])
    with pytest.raises(InvalidBundle, match="outside its write grant"):
        bundle.spec(narrow)
