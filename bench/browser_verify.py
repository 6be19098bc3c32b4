"""The cost of verifying ops in the page: statebus.js checking 1,000 values in headless Chromium.

    python -m bench.browser_verify [--ops 1000]

A node (``statebus serve``'s app on 127.0.0.1, port 0) hosts the namespace of a followed author,
who writes ``--ops`` values (one signed op each, 64-byte signatures), and the owner writes as many
of its own (batch proofs: a Merkle path and the commit signature per op). The node's page (logged
in) fetches every value with ``?proof`` first, untimed, then times ``statebus.verifyProof`` over all
of them one at a time (the cost that counts: nothing is cached yet), then all of them again at once
(``Promise.all``; a batch commit already checked is not checked again), for each kind. Needs node,
tests/js and /usr/bin/chromium. Prints one line of milliseconds per ``--ops`` values.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import Op, encode_op
from statebus.oplog.codec import mint_version
from statebus.testing.live_server import live_server

ROOT = Path(__file__).resolve().parents[1]
OP_TYPE = "application/vnd.statebus.op+json"

SCRIPT = """
(async () => {
  const out = {}
  try {
    await statebus.ready
    for (const [name, keys] of Object.entries(%s)) {
      const got = []
      for (let i = 0; i < keys.length; i += 50)
        got.push(...await Promise.all(keys.slice(i, i + 50).map(k =>
          fetch(k + '?proof', {credentials: 'same-origin'}).then(r => r.json()))))
      let t = performance.now(), ok = 0
      for (const g of got) ok += (await statebus.verifyProof(g.key, g.value, g.proof)).verified
      const serial = performance.now() - t
      t = performance.now()
      const all = await Promise.all(got.map(g => statebus.verifyProof(g.key, g.value, g.proof)))
      const again = performance.now() - t
      out[name] = {serial, again, ok, ok_again: all.filter(r => r.verified).length}
    }
  } catch (e) {
    out.error = String(e && e.stack || e)
  }
  window.__result = out
  window.__done = true
})()
"""


def main(ops: int) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.support.node_harness import run_browser

    author = Identity.generate()
    clock = itertools.count(int(time.time()))
    limits = {"rate_limit_per_client": "100000/second", "rate_limit_per_ip": "100000/second"}
    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp) / "node", timeout=60, **limits) as srv:
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as owner:
            owner.put("/~/.acl/.host", json=[author.pubkey]).raise_for_status()
            for i in range(ops):
                owner.put(f"/~/bench/{i}", json={"text": f"own post {i}", "n": i}).raise_for_status()
        with httpx.Client(base_url=srv.url, timeout=30) as anon:
            for i in range(ops):
                key = f"/{author.pubkey}/chirp/{i}"
                op = Op(key, "", (), author.pubkey, next(clock), "lww", "set", {"text": f"post {i}", "n": i})
                data = encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), author))
                req = anon.build_request("PUT", key, content=data, headers={"Content-Type": OP_TYPE})
                req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, author))
                anon.send(req).raise_for_status()
        keys = {
            "single": [f"/{author.pubkey}/chirp/{i}" for i in range(ops)],
            "batch": [f"/~/bench/{i}" for i in range(ops)],
        }
        page = run_browser(
            f"{srv.url}/",
            SCRIPT % json.dumps(keys),
            timeout=300,
            before=[f"{srv.url}/login?token={srv.token}"],
        )
    result = page.get("result") or {}
    if not page.get("ok") or "error" in result:
        raise SystemExit(f"browser run failed: {page.get('error')} {result.get('error')}")
    parts = [f"browser_verify ops={ops}"]
    for name in ("single", "batch"):
        r = result[name]
        parts.append(
            f"{name}: serial={r['serial']:.0f}ms ({r['serial'] / ops * 1000:.0f}us/op) "
            f"again_parallel={r['again']:.0f}ms verified={r['ok']}/{r['ok_again']}"
        )
    return " | ".join(parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000)
    args = parser.parse_args()
    print(main(args.ops))
