"""A smoke run of benchmarks/bench_index.py (the README's command for the index figures), so a change that
stops it running fails here rather than at the next measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_index.py"


def test_bench_index_runs_end_to_end_and_prints_its_figures(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH), "--n", "2000", "--queries", "20", "--single", "5",
                        "--exact-subset", "100", "--threads", "1", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    (result,) = doc["results"]
    assert result["n"] == 2000 and result["recall_at_1"] == 1.0  # exact index at this size
    dd = result["dedup"]
    assert 0 <= dd["speaker_merge_precision"] <= 1 and 0 <= dd["speaker_merge_recall"] <= 1
