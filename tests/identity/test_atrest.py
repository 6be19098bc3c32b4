"""The at-rest key (statebus/identity/atrest.py): derived from the phrase, checked against the marker
before anything is opened, and found in a key file, the OS keyring (the `keyring` package's plug-in
API) or the phrase typed at start; a sealed identity file opens only with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import pytest

from statebus.errors import StoreLocked
from statebus.identity import atrest, keystore
from statebus.identity.keys import identity_from_mnemonic
from statebus.mirror.crypto import MIRROR_PATH


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend in memory: what a desktop's Secret Service or Keychain does, for the test."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, str, bytes]]:
    data = tmp_path / "node"
    _, phrase, key = keystore.init_encrypted(data)
    atrest.forget(data)
    yield data, phrase, key
    atrest.forget(data)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    before = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(before)


def test_the_key_derives_from_the_phrase_and_is_not_the_mirror_key(folder: tuple[Path, str, bytes]) -> None:
    data, phrase, key = folder
    root = identity_from_mnemonic(phrase)
    assert atrest.derive_key(root) == key
    from statebus.identity.keys import derive

    assert derive(root, MIRROR_PATH).export_secret()[0] != key
    assert key.hex() not in (data / atrest.MARKER_FILE).read_text()
    assert b"secret" not in (data / "identity" / keystore.KEY_FILE).read_bytes()  # the identity is sealed


def test_a_sealed_identity_opens_only_once_unlocked(folder: tuple[Path, str, bytes]) -> None:
    data, phrase, key = folder
    with pytest.raises(StoreLocked, match="locked"):
        keystore.load(data)
    with pytest.raises(StoreLocked, match="does not open"):
        atrest.remember(data, bytes(32))
    atrest.remember(data, key)
    assert keystore.load(data).pubkey == identity_from_mnemonic(phrase).pubkey


def test_key_files_are_checked(folder: tuple[Path, str, bytes], tmp_path: Path) -> None:
    data, _, key = folder
    good = atrest.write_key_file(tmp_path / "k" / "node.key", key, data)
    assert good.stat().st_mode & 0o777 == 0o600
    with pytest.raises(Exception, match="never overwritten"):
        atrest.write_key_file(good, key, data)
    with pytest.raises(Exception, match="inside the data folder"):
        atrest.write_key_file(data / "node.key", key, data)
    good.chmod(0o644)
    with pytest.raises(StoreLocked, match="chmod 600"):
        atrest.unlock(data, key_file=good)
    good.chmod(0o600)
    assert atrest.unlock(data, key_file=good) == key
    atrest.forget(data)
    good.write_text("not hex")
    with pytest.raises(StoreLocked, match="does not hold a key"):
        atrest.unlock(data, key_file=good)


def test_no_source_no_terminal_is_refused(folder: tuple[Path, str, bytes]) -> None:
    data, _, _ = folder
    with pytest.raises(StoreLocked, match="encrypted at rest and locked"):
        atrest.unlock(data, interactive=False)


def test_the_phrase_typed_at_start_unlocks(
    folder: tuple[Path, str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, phrase, key = folder
    other = keystore.init(data.parent / "other")[1]
    typed: list[str] = [other, phrase]

    def getpass(prompt: str = "", stream: Any = None) -> str:
        assert "Recovery phrase" in prompt
        return typed.pop(0)

    monkeypatch.setattr(atrest.getpass, "getpass", getpass)
    with pytest.raises(StoreLocked, match="another identity"):
        atrest.unlock(data, interactive=True)
    assert atrest.unlock(data, interactive=True) == key


def test_the_os_keyring_holds_the_key(folder: tuple[Path, str, bytes], memory_keyring: MemoryKeyring) -> None:
    data, phrase, key = folder
    pubkey = identity_from_mnemonic(phrase).pubkey
    assert atrest.keyring_available()
    atrest.keyring_store(pubkey, key)
    assert memory_keyring.entries == {(atrest.KEYRING_SERVICE, pubkey): key.hex()}
    assert atrest.unlock(data, interactive=False) == key
    atrest.forget(data)
    memory_keyring.entries[(atrest.KEYRING_SERVICE, pubkey)] = bytes(32).hex()  # a wrong key in the keyring
    with pytest.raises(StoreLocked, match="does not open"):
        atrest.unlock(data, interactive=False)


def test_a_headless_machine_has_no_keyring() -> None:
    from keyring.backends import fail

    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        assert not atrest.keyring_available()
    finally:
        keyring.set_keyring(before)


def test_init_encrypt_writes_the_key_where_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from keyring.backends import fail

    from statebus.cli import main

    data, key_file = tmp_path / "node", tmp_path / "keys" / "node.key"
    try:
        assert main(["init", "--encrypt", "--data", str(data), "--at-rest-key-file", str(key_file)]) == 0
        out = capsys.readouterr().out
        assert "encrypted at rest" in out and f"Its at-rest key is in {key_file}" in out
        key = atrest.read_key_file(key_file, data)
        assert key.hex() not in out and atrest.encrypted(data)
        atrest.forget(data)
        assert atrest.unlock(data, key_file=key_file) == key
        with pytest.raises(SystemExit):  # a node is there already: nothing is replaced
            main(["init", "--encrypt", "--data", str(data), "--at-rest-key-file", str(tmp_path / "k2")])
        assert "holds a node already" in capsys.readouterr().err
        before = keyring.get_keyring()
        keyring.set_keyring(fail.Keyring())
        try:
            with pytest.raises(SystemExit):
                main(["init", "--encrypt", "--keyring", "--data", str(tmp_path / "other")])
        finally:
            keyring.set_keyring(before)
        assert "no OS keyring is available here" in capsys.readouterr().err
        assert not (tmp_path / "other").exists()
    finally:
        atrest.forget(data)
