"""Mirror keys and sealing, and the mirror-side store, with plain calls."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from statebus.errors import Forbidden, InvalidValue, MirrorTampered, QuotaExceeded
from statebus.identity.keys import Identity, identity_from_mnemonic, new_mnemonic
from statebus.mirror.crypto import MAX_SEALED, MirrorCipher, bucket
from statebus.mirror.store import MirrorStore


def test_buckets_double_to_one_mib_then_grow_by_mib() -> None:
    assert [bucket(n) for n in (0, 4000, 4053, 4052, 100_000)] == [4096, 4096, 8192, 4096, 131072]
    assert bucket((1 << 20) - 44) == 1 << 20 and bucket(1 << 20) == 2 << 20
    assert bucket(5 << 20) == 6 << 20


def test_the_phrase_alone_gives_back_the_same_keys_and_ids() -> None:
    phrase = new_mnemonic()
    first, again = MirrorCipher(identity_from_mnemonic(phrase)), MirrorCipher(identity_from_mnemonic(phrase))
    sealed = first.seal("seg/7", b"private ops")
    assert again.object_id("seg/7") == first.object_id("seg/7") != first.object_id("seg/8")
    assert again.open("seg/7", sealed) == b"private ops"
    assert len(sealed) == 4096 and b"private" not in sealed
    assert first.seal("seg/7", b"private ops") != sealed  # a fresh nonce every time
    assert "seg" not in first.object_id("seg/7") and len(first.object_id("seg/7")) == 32


def test_a_changed_swapped_or_foreign_object_does_not_open() -> None:
    mine, theirs = (
        MirrorCipher(identity_from_mnemonic(new_mnemonic())),
        MirrorCipher(identity_from_mnemonic(new_mnemonic())),
    )
    sealed = mine.seal("seg/1", b"x" * 100)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    for name, data, who in (
        ("seg/1", bytes(flipped), mine),
        ("seg/2", sealed, mine),
        ("seg/1", sealed, theirs),
    ):
        with pytest.raises(MirrorTampered, match=name):
            who.open(name, data)
    with pytest.raises(MirrorTampered, match="too short"):
        mine.open("seg/1", b"abc")


def test_a_key_that_cannot_derive_has_no_mirror_and_nothing_is_too_big() -> None:
    with pytest.raises(InvalidValue, match="namespace root"):
        MirrorCipher(Identity.generate())
    with pytest.raises(InvalidValue, match="at most"):
        MirrorCipher(identity_from_mnemonic(new_mnemonic())).seal("seg/0", bytes(MAX_SEALED))


def test_the_store_keeps_consent_and_quota(tmp_path: Path) -> None:
    owner = identity_from_mnemonic(new_mnemonic()).pubkey
    stranger = identity_from_mnemonic(new_mnemonic()).pubkey
    store = MirrorStore(tmp_path, [owner], quota=10_000)
    oid = "0" * 32
    store.put(owner, oid, b"a" * 6000)
    store.put(owner, oid, b"b" * 9000)  # a replacement counts only the difference
    assert store.used(owner) == 9000
    with pytest.raises(QuotaExceeded, match="it holds 9000, this object needs 2000 more"):
        store.put(owner, "1" * 32, b"c" * 2000)
    assert [o.id for o in store.listing(owner)] == [oid]
    with pytest.raises(Forbidden, match="does not mirror for"):
        store.put(stranger, oid, b"x")
    with pytest.raises(InvalidValue, match="32 lowercase hex"):
        store.get(owner, "../../identity")
    assert store.proof(owner, oid, b"n" * 16) == hashlib.sha256(b"n" * 16 + b"b" * 9000).hexdigest()
    assert store.delete(owner, oid) and store.used(owner) == 0
    assert (tmp_path / "mirror" / owner).stat().st_mode & 0o077 == 0
