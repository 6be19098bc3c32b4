from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from statebus.errors import Forbidden, InvalidValue, NotFound
from statebus.identity import keystore
from statebus.identity.keys import derive


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_creates_private_files(tmp_path: Path) -> None:
    ident, phrase = keystore.init(tmp_path)
    d = tmp_path / "identity"
    assert _mode(d) == 0o700
    assert _mode(d / "node_key.json") == 0o600
    assert _mode(d / "owner_token") == 0o600
    assert sorted(p.name for p in d.iterdir()) == ["node_key.json", "owner_token"]
    # the phrase is not stored anywhere in the folder
    for p in d.iterdir():
        text = p.read_text()
        assert phrase not in text and phrase.split()[0] + " " + phrase.split()[1] not in text
    assert keystore.load(tmp_path) == ident
    assert keystore.load(tmp_path).path == ident.path


def test_files_private_even_with_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keystore.init(tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "identity") == 0o700
    assert _mode(tmp_path / "identity" / "node_key.json") == 0o600


def test_owner_token(tmp_path: Path) -> None:
    keystore.init(tmp_path)
    token = keystore.load_owner_token(tmp_path)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert keystore.check_owner_token(tmp_path, token)
    assert not keystore.check_owner_token(tmp_path, token[:-1] + ("A" if token[-1] != "A" else "B"))
    new = keystore.new_owner_token(tmp_path)
    assert new != token and keystore.check_owner_token(tmp_path, new)
    assert not keystore.check_owner_token(tmp_path / "elsewhere", new)


def test_recover_gives_same_pubkey(tmp_path: Path) -> None:
    ident, phrase = keystore.init(tmp_path / "a")
    again = keystore.recover(tmp_path / "b", phrase)
    assert again.pubkey == ident.pubkey
    assert keystore.load(tmp_path / "b").pubkey == ident.pubkey
    # sub-keys survive recovery too
    assert (
        derive(again, "device/laptop").pubkey == derive(keystore.load(tmp_path / "a"), "device/laptop").pubkey
    )
    # recovering the same identity in place is harmless
    assert keystore.recover(tmp_path / "a", phrase).pubkey == ident.pubkey


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    ident, _ = keystore.init(tmp_path)
    with pytest.raises(Forbidden, match="already exists"):
        keystore.init(tmp_path)
    _, other_phrase = keystore.init(tmp_path / "other")
    with pytest.raises(Forbidden, match="different identity"):
        keystore.recover(tmp_path, other_phrase)
    assert keystore.load(tmp_path) == ident
    replaced = keystore.recover(tmp_path, other_phrase, force=True)
    assert keystore.load(tmp_path) == replaced != ident
    assert _mode(tmp_path / "identity" / "node_key.json") == 0o600
    assert not [p for p in (tmp_path / "identity").iterdir() if p.name.endswith(".tmp")]


def test_bad_phrase_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue):
        keystore.recover(tmp_path, "not a phrase at all")
    assert not keystore.exists(tmp_path)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        keystore.load(tmp_path)
    keystore.init(tmp_path)
    key = tmp_path / "identity" / "node_key.json"
    os.chmod(key, 0o644)
    with pytest.raises(Forbidden, match="readable by others"):
        keystore.load(tmp_path)
    os.chmod(key, 0o600)
    key.write_text("{not json")
    with pytest.raises(InvalidValue, match="not JSON") as exc:
        keystore.load(tmp_path)
    assert "not json" not in str(exc.value)


def test_a_kept_phrase_is_private_and_taken_once(tmp_path: Path) -> None:
    """A first start with no terminal keeps the phrase (0600) until it is shown: once."""
    identity, phrase = keystore.init(tmp_path, keep_phrase=True)
    assert keystore.phrase_pending(tmp_path)
    assert _mode(keystore.phrase_file(tmp_path)) == 0o600
    assert keystore.take_phrase(tmp_path) == phrase
    assert not keystore.phrase_pending(tmp_path)
    with pytest.raises(NotFound, match="shown already"):
        keystore.take_phrase(tmp_path)
    assert keystore.recover(tmp_path / "again", phrase).pubkey == identity.pubkey


def test_a_kept_phrase_goes_with_the_identity_it_belongs_to(tmp_path: Path) -> None:
    _, phrase = keystore.init(tmp_path, keep_phrase=True)
    keystore.recover(tmp_path, phrase)  # the same identity: whoever recovers has the phrase
    assert not keystore.phrase_pending(tmp_path)
    keystore.init(tmp_path / "b", keep_phrase=True)
    keystore.init(tmp_path / "b", force=True)  # replaced by `statebus init --force`, shown by it
    assert not keystore.phrase_pending(tmp_path / "b")
    assert not keystore.phrase_pending(tmp_path / "c")
    keystore.init(tmp_path / "c")  # `statebus init` shows it: nothing kept
    assert not keystore.phrase_pending(tmp_path / "c")
