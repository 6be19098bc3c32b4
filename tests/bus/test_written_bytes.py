"""What a local write puts on disk is byte for byte what it was before the write path was rebuilt
around one op object (issue 16): the same encoding, version, signature and Merkle proofs.

``GOLDEN`` was produced by the code before that change (``392296a``) with the writes below; Ed25519
signatures are deterministic, so any change to the canonical form, the minting of versions, the
batch signature or its proofs changes these bytes (and federation and stored data with them).
"""

from __future__ import annotations

import dataclasses

import pytest

from statebus.bus import Bus, changes
from statebus.bus.changes import Change, op_change
from statebus.identity import check_signature
from statebus.identity.keys import Identity
from statebus.oplog import DELETE, Patch, decode_op, encode_op
from statebus.oplog.events import fresh_op
from statebus.server.assembly import batch_signer_for
from statebus.storage.base import StoredOp, stored_op
from statebus.storage.memory import MemoryStorage

# fmt: off
GOLDEN = [
    b'{"a":"aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a","b":{"big":1e+16,"list":[1,null,true],"n":1.5,"name":"Zo\xc3\xab"},"c":1,"k":"/aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a/golden/a","m":"lww","p":[],"s":"QzHQVTztkP1OkETUT8HeS8YSXD4qiiH70HLmlxU7Zo6IUGrln1qjnoxaKgiWa9YSuCc4enEg1yTtw+TjffIomIoEAAAAAwAAAAC/oP46EQPgqMNaqc9sC5a0tt6hsF6kYBHmlCprOZ5Q0FGK5lcKQwBVJ55kOulkz/JL/9obd4UG5yWsmOMfCbOm","t":"set","v":"1-r6bcit3z6tdltyea"}',
    b'{"a":"aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a","bb":"AAFieXRlcw==","c":1,"ct":"application/octet-stream","k":"/aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a/golden/b","m":"lww","p":[],"s":"QzHQVTztkP1OkETUT8HeS8YSXD4qiiH70HLmlxU7Zo6IUGrln1qjnoxaKgiWa9YSuCc4enEg1yTtw+TjffIomIoEAAAAAwAAAAEEo0l93ROxaTscLyZ3y4pvu54/hNaZSiPugaACqwNSVlGK5lcKQwBVJ55kOulkz/JL/9obd4UG5yWsmOMfCbOm","t":"set","v":"1-bpra6dqjflcfhpix"}',
    b'{"a":"aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a","b":[[".name","Z\xe2\x80\xa8"],[".list[1]"]],"c":2,"k":"/aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a/golden/a","m":"lww","p":["1-r6bcit3z6tdltyea"],"s":"QzHQVTztkP1OkETUT8HeS8YSXD4qiiH70HLmlxU7Zo6IUGrln1qjnoxaKgiWa9YSuCc4enEg1yTtw+TjffIomIoEAAAAAwAAAALYMMHzdvCNO9gIKABChWBRJ0PL+HEcEIn/y+Ws7OcEPQ==","t":"patch","v":"2-2jhlxechcmc6orjk"}',
    b'{"a":"aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a","b":"one","c":1,"k":"/aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a/golden/c","m":"lww","p":[],"s":"QzFdN5pAUz88dKO4dqx/IuHxyxaGdqXtiQf/HvCDR82ykvCLNpnj0pjbjRMZfsvV1XePGiib044bLUds0ED3fp8JAAAAAQAAAAA=","t":"set","v":"my-version-1"}',
    b'{"a":"aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a","c":2,"k":"/aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a/golden/b","m":"lww","p":["1-bpra6dqjflcfhpix"],"s":"QzGZQdOSlh3XPtE3FDUV9gqWBS4sFIHNM4DwQNhfq5FKq0/MJSyfMBP8pyjYeDL2eWKdoAH/eWcgtd8OZ/R9JswMAAAAAgAAAACea2aXn1JrX2k1lcZfoDsIdG5zH6RDrEe5hgfasylAdQ==","t":"delete","v":"2-opv5wfwloda2xvgc"}',
    b'{"a":"aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a","b":[1,2,3],"c":3,"k":"/aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4a/golden/a","m":"lww","p":["2-2jhlxechcmc6orjk"],"s":"QzGZQdOSlh3XPtE3FDUV9gqWBS4sFIHNM4DwQNhfq5FKq0/MJSyfMBP8pyjYeDL2eWKdoAH/eWcgtd8OZ/R9JswMAAAAAgAAAAFAB53zv9DUn5NWd3HO26cXig+XGpKy19UATC1+CoEcvA==","t":"set","v":"3-7nk4p2xtm42iwsqq"}',
]
# fmt: on


def written() -> tuple[Bus, list[bytes]]:
    who = Identity(bytes(range(32)))
    bus = Bus(MemoryStorage(), local=who.pubkey)
    sign = batch_signer_for(who)
    bus.save("/~/golden/a", {"name": "Zoë", "n": 1.5, "big": 1e16, "list": [1, None, True]})
    bus.save("/~/golden/b", b"\x00\x01bytes", content_type="application/octet-stream")
    bus.patch("/~/golden/a", [Patch(".name", "Z\u2028"), Patch(".list[1]", DELETE)])
    bus.flush(sign)
    bus.save("/~/golden/c", "one", version="my-version-1")
    bus.flush(sign)
    bus.delete("/~/golden/b")
    bus.save("/~/golden/a", [1, 2, 3], parents=bus.fetch("/~/golden/a").version)
    bus.flush(sign)
    return bus, [op.data for op in bus.storage.scan("/" + who.pubkey + "/", 0, 100)]


def test_written_ops_are_the_bytes_they_were() -> None:
    _, data = written()
    assert data == GOLDEN


def test_the_log_serves_the_stored_bytes_and_each_op_verifies_alone() -> None:
    bus, data = written()
    for stored in data:
        op = decode_op(stored)
        check_signature(op)
        found = bus.history(op.key, [])  # every change of the key, from its log
        assert stored in [encode_op(c.op) for c in found if c.op is not None]


def test_one_op_object_per_write() -> None:
    """The op a write returns (and subscribers get) is the op its key's log holds, signed in place
    by the commit: no copy is made for the version or the signature."""
    who = Identity(bytes(range(32)))
    bus = Bus(MemoryStorage(), local=who.pubkey)
    heard = []
    bus.observe("/~/golden/", heard.append, snapshot=False)
    change = bus.save("/~/golden/a", {"n": 1})
    assert change.op is not None and change.op.sig == b""
    assert heard[-1].op is change.op
    bus.flush(batch_signer_for(who))
    logged = bus.history("/~/golden/a", [])[-1].op
    assert logged is change.op
    assert change.op.sig != b""
    check_signature(change.op)
    assert encode_op(change.op) == bus.storage.scan(change.key, 0, 10)[0].data


@pytest.mark.parametrize(
    "swaps",
    # as imported (the slots swap in pure Python; the constructor where mypyc compiled Change), and
    # the constructor fallback in any build
    [changes._SWAPS, False],
    ids=["as-imported", "constructor"],
)
def test_op_change_is_the_change_the_constructor_makes(swaps: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("statebus.bus.changes._SWAPS", swaps)
    op = fresh_op("/k", "1-x", (), "a" * 52, 1, "lww", "set", "v", None)
    made = op_change("/k", 7, True, "v", None, ("1-x",), (), "lww", op, True, "peer")
    plain = Change("/k", 7, "op", True, "v", None, ("1-x",), (), "lww", op, linear=True, peer="peer")
    assert type(made) is Change and made == plain and repr(made) == repr(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.value = "w"  # type: ignore[misc]


def test_stored_op_is_the_stored_op_the_constructor_makes() -> None:
    made, plain = stored_op(3, "/k", "1-x", b"{}", False), StoredOp(3, "/k", "1-x", b"{}", False)
    assert (
        type(made) is StoredOp and made == plain and hash(made) == hash(plain) and repr(made) == repr(plain)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.data = b"[]"  # type: ignore[misc]
