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
