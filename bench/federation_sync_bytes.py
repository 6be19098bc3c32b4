"""Bytes anti-entropy moves, against a full resend: two replicas of N ops that differ by D ops.

    /work/venv/bin/python bench/federation_sync_bytes.py

Runs the real messages (``statebus.federation.sync``: SyncSession on one side, ``answer`` on the
other, every message encoded as on the wire) over synthetic op sets: random 32-byte op ids, each op
``--op-bytes`` long (370 B is a typical small signed JSON op). Half the differing ops are on each side.
"""

from __future__ import annotations

import argparse
import os

from statebus.federation.sync import LEAF, OpIndex, SyncRequest, SyncResponse, SyncSession, answer


def run(n: int, d: int, op_bytes: int, leaf: int) -> tuple[int, int, int, int]:
    common = [os.urandom(32) for _ in range(n - d)]
    only_a = [os.urandom(32) for _ in range(d // 2)]
    only_b = [os.urandom(32) for _ in range(d - d // 2)]
    body = b'{"x":"' + b"x" * (op_bytes - 8) + b'"}'
    a_ops = {i: body for i in common + only_a}
    b_ops = {i: body for i in common + only_b}
    session = SyncSession("/" + "a" * 51 + "q/chirp/", OpIndex(a_ops), a_ops, leaf)
    b_index = OpIndex(b_ops)
    wire = 0
    req: SyncRequest | None = session.start()
    while req is not None:
        raw = req.encode()
        wire += len(raw)
        resp = answer(b_index, b_ops, SyncRequest.decode(raw), leaf).encode()
        wire += len(resp)
        req = session.receive(SyncResponse.decode(resp), len(resp))
    assert len(session.received) == len(only_b) and session.pushed == set(only_a)
    full = (len(a_ops) + len(b_ops)) * op_bytes
    return wire, d * op_bytes, full, session.rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op-bytes", type=int, default=370)
    parser.add_argument("--leaf", type=int, default=LEAF)
    args = parser.parse_args()
    print(
        "| ops per side | differing | bytes on the wire | of which ops | full resend | ratio | round trips |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, d in ((1000, 0), (1000, 2), (1000, 20), (10_000, 0), (10_000, 10), (10_000, 100), (10_000, 1000)):
        wire, ops, full, rounds = run(n, d, args.op_bytes, args.leaf)
        print(f"| {n} | {d} | {wire} | {ops} | {full} | {wire / full:.2%} | {rounds} |")


if __name__ == "__main__":
    main()
