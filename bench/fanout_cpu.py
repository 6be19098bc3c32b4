"""CPU of the node's side of a fan-out, in process: ``python -m bench.fanout_cpu [--subscribers N]``.

``N`` SSE streams are opened on one key through the app (ASGI calls, no sockets: each ``send``
completes at once and counts bytes), then ``--writes`` changes are saved one after another, each
awaited until every stream has sent it. Prints the process CPU µs per delivery (median of
``--repeat`` rounds): the pump, the stream and the encoding, without uvicorn and the socket write that
dominate a real fan-out. A figure for comparing two versions of the streaming code on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import uvloop

from statebus.config import Settings
from statebus.server import create_app, owner_token
from statebus.testing.asgi import sse_scope

Message = MutableMapping[str, Any]


async def run(subscribers: int, writes: int, repeat: int) -> list[float]:
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="statebus-fanout-")), log_level="warning")
    app = create_app(settings)
    token = owner_token(settings)
    node = app.state.node
    key = "/~/bench/fan"
    await node.save(key, {"seq": 0})
    delivered = 0
    gone = asyncio.get_running_loop().create_future()

    async def send(message: Message) -> None:
        nonlocal delivered
        if message.get("body"):
            delivered += 1

    async def receive() -> Message:
        await gone
        return {"type": "http.disconnect"}

    tasks = [asyncio.ensure_future(app(sse_scope(key, token), receive, send)) for _ in range(subscribers)]
    while delivered < 2 * subscribers:  # the retry line and the snapshot
        await asyncio.sleep(0.01)
    gc.collect()
    gc.freeze()
    out: list[float] = []
    seq = 0
    for _ in range(repeat):
        start_cpu, start_delivered = time.process_time(), delivered
        for _ in range(writes):
            seq += 1
            target = delivered + subscribers
            await node.save(key, {"seq": seq, "pad": "x" * 60})
            while delivered < target:
                await asyncio.sleep(0)
        out.append((time.process_time() - start_cpu) / (delivered - start_delivered) * 1e6)
    gone.set_result(None)
    await asyncio.gather(*tasks, return_exceptions=True)
    await node.aclose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rounds = uvloop.run(run(args.subscribers, args.writes, args.repeat))
    print(
        f"{args.subscribers} streams x {args.writes} writes: CPU µs per delivery, median of {len(rounds)}: "
        f"{statistics.median(rounds):.2f} (rounds: {', '.join(f'{r:.2f}' for r in rounds)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
