from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import BadSignature, Forbidden, InvalidOp
from statebus.identity.delegation import Keyring, delegate, record_key, revoke
from statebus.identity.keys import Identity
from statebus.identity.signing import check_signature, seal_batch, sign_batch, sign_op, verify_op
from statebus.oplog.codec import decode_op, encode_op
from statebus.oplog.events import Op

OWNER = Identity.generate()
DEVICE = Identity.generate()
NOW = 1_800_000_000.0


def make(author: Identity, key: str, body: object = 1, clock: int = 1) -> Op:
    return Op(
        key=key,
        version=f"{clock}-v",
        parents=(),
        author=author.pubkey,
        clock=clock,
        merge="lww",
        kind="set",
        body=body,
    )


def k(path: str, owner: Identity = OWNER) -> str:
    return f"/{owner.pubkey}/{path}"


def keyring_with(*records: object, leeway: float = 0.0) -> Keyring:
    ring = Keyring(leeway=leeway)
    for rec in records:
        ring.add(rec)  # type: ignore[arg-type]
    return ring


def test_owner_op_verifies_and_survives_encoding() -> None:
    op = sign_op(make(OWNER, k("chirp/1")), OWNER)
    verify_op(op)
    verify_op(decode_op(encode_op(op)))


def test_unsigned_forged_and_tampered() -> None:
    op = make(OWNER, k("chirp/1"))
    with pytest.raises(BadSignature, match="unsigned"):
        verify_op(op)
    forged = dataclasses.replace(op, sig=DEVICE.sign(b"whatever"))
    with pytest.raises(BadSignature, match="does not verify"):
        verify_op(forged)
    signed = sign_op(op, OWNER)
    with pytest.raises(BadSignature):
        verify_op(dataclasses.replace(signed, body=2))
    with pytest.raises(BadSignature):
        verify_op(dataclasses.replace(signed, clock=2))
    with pytest.raises(BadSignature, match="neither"):
        verify_op(dataclasses.replace(signed, sig=b"x" * 10))


def test_wrong_author() -> None:
    # signed by DEVICE but claiming OWNER as author
    op = make(OWNER, k("chirp/1"))
    lying = dataclasses.replace(op, sig=sign_op(dataclasses.replace(op, author=DEVICE.pubkey), DEVICE).sig)
    with pytest.raises(BadSignature):
        verify_op(lying)
    with pytest.raises(InvalidOp, match="author"):
        sign_op(op, DEVICE)
    with pytest.raises(BadSignature, match="author"):
        verify_op(dataclasses.replace(op, author="not-a-key", sig=b"s" * 64))


def test_author_outside_its_namespace() -> None:
    op = sign_op(make(DEVICE, k("chirp/1")), DEVICE)
    check_signature(op)  # a good signature…
    with pytest.raises(Forbidden, match="no delegation"):
        verify_op(op, Keyring(), NOW)  # …but not the owner's namespace


def test_delegated_key_within_and_outside_scope() -> None:
    rec = delegate(OWNER, DEVICE.pubkey, [k("chirp/")], issued=1, not_before=0, expires=int(NOW) + 3600)
    ring = keyring_with(rec)
    verify_op(sign_op(make(DEVICE, k("chirp/42")), DEVICE), ring, NOW)
    verify_op(sign_op(make(DEVICE, k("chirp/a/b")), DEVICE), ring, NOW)
    with pytest.raises(Forbidden, match="does not cover"):
        verify_op(sign_op(make(DEVICE, k("mail/1")), DEVICE), ring, NOW)
    with pytest.raises(Forbidden, match="does not cover"):
        verify_op(sign_op(make(DEVICE, k("chirpy")), DEVICE), ring, NOW)
    other = Identity.generate()
    with pytest.raises(Forbidden):
        verify_op(sign_op(make(DEVICE, k("chirp/1", other)), DEVICE), ring, NOW)


def test_whole_namespace_delegation_never_covers_keys_records() -> None:
    ring = keyring_with(delegate(OWNER, DEVICE.pubkey, issued=1))
    verify_op(sign_op(make(DEVICE, k("anything/at/all")), DEVICE), ring, NOW)
    with pytest.raises(Forbidden, match="only the owner"):
        verify_op(sign_op(make(DEVICE, record_key(OWNER.pubkey, DEVICE.pubkey)), DEVICE), ring, NOW)
    verify_op(sign_op(make(OWNER, record_key(OWNER.pubkey, DEVICE.pubkey)), OWNER), ring, NOW)


def test_revoked_key_rejected() -> None:
    ring = keyring_with(delegate(OWNER, DEVICE.pubkey, issued=1), revoke(OWNER, DEVICE.pubkey, issued=2))
    with pytest.raises(Forbidden, match="revoked"):
        verify_op(sign_op(make(DEVICE, k("chirp/1")), DEVICE), ring, NOW)


def test_expired_and_not_yet_valid_delegation() -> None:
    ring = keyring_with(delegate(OWNER, DEVICE.pubkey, issued=1, not_before=int(NOW) - 100, expires=int(NOW)))
    op = sign_op(make(DEVICE, k("chirp/1")), DEVICE)
    verify_op(op, ring, NOW - 1)
    with pytest.raises(Forbidden, match="expired"):
        verify_op(op, ring, NOW)
    with pytest.raises(Forbidden, match="not valid before"):
        verify_op(op, ring, NOW - 200)


def test_a_delegation_from_an_owner_clock_ahead_of_ours_starts_within_the_leeway() -> None:
    """The owner's clock runs 60 s ahead: "from now" is in our future. A node's keyring allows its
    ``max_clock_skew`` for the start; the expiry stays strict."""
    rec = delegate(OWNER, DEVICE.pubkey, issued=1, not_before=int(NOW) + 60, expires=int(NOW) + 3600)
    op = sign_op(make(DEVICE, k("chirp/1")), DEVICE)
    verify_op(op, keyring_with(rec, leeway=120), NOW)
    with pytest.raises(Forbidden, match="not valid before"):
        verify_op(op, keyring_with(rec, leeway=30), NOW)
    with pytest.raises(Forbidden, match="expired"):
        verify_op(op, keyring_with(rec, leeway=120), NOW + 3600)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 32, 33])
def test_batch_each_op_verifies_alone(n: int) -> None:
    ops = [make(OWNER, k(f"chirp/{i}"), body={"i": i}, clock=i + 1) for i in range(n)]
    signed = sign_batch(ops, OWNER)
    assert [dataclasses.replace(o, sig=b"") for o in signed] == ops
    for op in signed:
        assert op.sig.startswith(b"C1")
        verify_op(op)
        verify_op(decode_op(encode_op(op)))  # travels alone through the codec


def test_batch_tampering_fails() -> None:
    ops = [make(OWNER, k(f"chirp/{i}"), body=i, clock=i + 1) for i in range(6)]
    signed = sign_batch(ops, OWNER)
    with pytest.raises(BadSignature):
        verify_op(dataclasses.replace(signed[2], body=99))  # tampered op
    sig = bytearray(signed[2].sig)
    sig[-1] ^= 1  # tampered sibling hash
    with pytest.raises(BadSignature):
        verify_op(dataclasses.replace(signed[2], sig=bytes(sig)))
    sig = bytearray(signed[2].sig)
    sig[5] ^= 1  # tampered commit signature
    with pytest.raises(BadSignature):
        verify_op(dataclasses.replace(signed[2], sig=bytes(sig)))
    # a proof moved to another op of the same batch
    with pytest.raises(BadSignature):
        verify_op(dataclasses.replace(signed[3], sig=signed[2].sig))
    # a truncated proof, and an index outside the batch
    with pytest.raises(BadSignature, match="wrong number"):
        verify_op(dataclasses.replace(signed[2], sig=signed[2].sig[:-32]))
    bad_index = signed[2].sig[:70] + (99).to_bytes(4, "big") + signed[2].sig[74:]
    with pytest.raises(BadSignature, match="outside"):
        verify_op(dataclasses.replace(signed[2], sig=bad_index))


def test_batch_by_delegate_and_wrong_author() -> None:
    ring = keyring_with(delegate(OWNER, DEVICE.pubkey, [k("chirp/")], issued=1))
    signed = sign_batch([make(DEVICE, k("chirp/1")), make(DEVICE, k("mail/1"))], DEVICE)
    verify_op(signed[0], ring, NOW)
    with pytest.raises(Forbidden):
        verify_op(signed[1], ring, NOW)
    with pytest.raises(InvalidOp):
        sign_batch([make(OWNER, k("a"))], DEVICE)
    with pytest.raises(InvalidOp):
        sign_batch([], OWNER)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.data())
def test_batch_proofs_property(n: int, data: st.DataObject) -> None:
    ops = [make(OWNER, k(f"p/{i}"), body=i, clock=i + 1) for i in range(n)]
    signed = sign_batch(ops, OWNER)
    i = data.draw(st.integers(0, n - 1))
    verify_op(signed[i])
    j = data.draw(st.integers(0, n - 1))
    if j != i:
        with pytest.raises(BadSignature):
            verify_op(dataclasses.replace(signed[j], sig=signed[i].sig))


def test_keyring_rejects_unsigned_record() -> None:
    rec = delegate(OWNER, DEVICE.pubkey, issued=1)
    forged = dataclasses.replace(rec, sig=DEVICE.sign(rec.signing_bytes()))
    with pytest.raises(BadSignature):
        Keyring().add(forged)


def test_key_outside_any_namespace() -> None:
    for key in ("relative/key", "/short/x", f"/{OWNER.pubkey}x/y"):
        op = sign_op(make(OWNER, key), OWNER)
        with pytest.raises(InvalidOp, match="namespace"):
            verify_op(op)


def test_forgotten_delegation_loses_rights() -> None:
    ring = keyring_with(delegate(OWNER, DEVICE.pubkey, issued=1))
    op = sign_op(make(DEVICE, k("x")), DEVICE)
    verify_op(op, ring, NOW)
    ring.forget(OWNER.pubkey, DEVICE.pubkey)
    with pytest.raises(Forbidden):
        verify_op(op, ring, NOW)


def test_seal_batch_fills_the_proofs_sign_batch_makes_in_place() -> None:
    ops = [make(OWNER, k(f"app/s{i}"), i) for i in range(5)]
    copies = sign_batch(ops, OWNER)
    seal_batch(ops, OWNER)
    assert [op.sig for op in ops] == [c.sig for c in copies]
    assert [encode_op(op) for op in ops] == [encode_op(c) for c in copies]
    for op in ops:
        verify_op(op)


def test_seal_batch_refuses_a_signed_op_and_changes_nothing() -> None:
    fresh = make(OWNER, k("app/fresh"))
    signed = sign_op(make(OWNER, k("app/signed")), OWNER)
    with pytest.raises(InvalidOp):
        seal_batch([fresh, signed], OWNER)
    assert fresh.sig == b""
