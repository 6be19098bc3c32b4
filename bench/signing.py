"""Measure op signing and verification throughput: ``python -m bench.signing``.

Prints ops/s (median of 3 runs) for single-op signatures and batch commits of 32 and 256 ops.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from statebus.identity import signing
from statebus.identity.keys import Identity
from statebus.oplog.events import Op


def _ops(author: Identity, n: int) -> list[Op]:
    return [
        Op(
            key=f"/{author.pubkey}/chirp/posts/{i}",
            version=f"{i + 1}-bench{i}",
            parents=(f"{i}-bench{i - 1}",) if i else (),
            author=author.pubkey,
            clock=i + 1,
            merge="lww",
            kind="set",
            body={"text": "a short post of about sixty characters of text, like a chirp", "n": i},
        )
        for i in range(n)
    ]


def _rate(n: int, fn: Callable[[], object]) -> float:
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        runs.append(n / (time.perf_counter() - t0))
    return statistics.median(runs)


def measure(n: int = 2048) -> dict[str, float]:
    """ops/s for each signing and verification form, over ``n`` ops (a multiple of 256)."""
    me = Identity.generate()
    ops = _ops(me, n)
    single = [signing.sign_op(op, me) for op in ops]

    def batched(size: int) -> list[Op]:
        return [o for j in range(0, n, size) for o in signing.sign_batch(ops[j : j + size], me)]

    b32, b256 = batched(32), batched(256)

    def verify_all(signed: list[Op], cold: bool = False) -> None:
        signing.clear_commit_cache()
        for op in signed:
            if cold:
                signing.clear_commit_cache()
            signing.verify_op(op)

    return {
        "sign_op": _rate(n, lambda: [signing.sign_op(op, me) for op in ops]),
        "sign_batch(32)": _rate(n, lambda: batched(32)),
        "sign_batch(256)": _rate(n, lambda: batched(256)),
        "verify_op single": _rate(n, lambda: verify_all(single)),
        "verify_op batch(32)": _rate(n, lambda: verify_all(b32)),
        "verify_op batch(256)": _rate(n, lambda: verify_all(b256)),
        "verify_op batch(256), no commit cache": _rate(n, lambda: verify_all(b256, cold=True)),
    }


def main() -> None:
    for name, rate in measure().items():
        print(f"{name:40s} {rate:>10,.0f} ops/s")


if __name__ == "__main__":
    main()
