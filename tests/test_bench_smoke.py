"""Smoke test of the benchmark suite: ``python -m bench --quick`` completes and writes every scenario.

It never asserts on a measured number (they are noisy); only that each scenario ran and produced
figures, and that the results file has the documented shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_writes_a_result_for_every_scenario(tmp_path: Path) -> None:
    from bench.__main__ import QUICK

    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["quick"] is True
    assert set(doc["results"]) == set(QUICK)
    for name, runs in doc["results"].items():
        assert len(runs) == 1, name
        assert "error" not in runs[0], (name, runs[0])
        assert doc["summary"][name], name
    assert {t["scenario"] for t in doc["targets"]} <= set(QUICK)
    assert "results:" in proc.stdout


def test_signing_bench_measures_every_rate() -> None:
    from bench.signing import measure

    rates = measure(256)
    assert set(rates) >= {"sign_op", "sign_batch(32)", "sign_batch(256)", "verify_op single"}
    assert all(rate > 0 for rate in rates.values())


@pytest.mark.timeout(200)
def test_devnet_dht_bench_kills_real_nodes_and_still_finds_every_record() -> None:
    """``bench.devnet_dht`` on a small devnet of ``statebus serve`` processes: every lookup after the
    kill finds its record, and the resolver evicted the dead nodes it had asked (counted only by the
    healing DHT of issue 19: the old code printed ``evicted=-``)."""
    from bench.devnet_dht import main

    line = main(4, 1, 4)
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    assert fields["nodes"] == "4" and fields["killed"] == "1" and fields["found"] == "8/8", line
    assert fields["evicted"].isdigit() and int(fields["evicted"]) >= 1, line
    assert all(fields[k].endswith("ms") for k in ("before_p50", "first_after", "evicted_p50")), line
