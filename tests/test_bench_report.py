"""The committed benchmark report is what its committed JSON renders to (one command
regenerates both; nothing in RESULTS.md is edited by hand)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("name", ["RESULTS.md", "RESULTS-quick.md"])
def test_committed_report_matches_its_json(tmp_path, name):
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(BENCH))
    try:
        from report import write_report
    finally:
        sys.path.remove(str(BENCH))
    quick = name == "RESULTS-quick.md"
    res = json.loads((BENCH / "results" / f"results{'-quick' if quick else ''}.json").read_text())
    out = tmp_path / "results"
    out.mkdir()
    write_report(res, out, tmp_path / name)
    assert (tmp_path / name).read_text() == (BENCH / name).read_text()
    assert (out / f"scaling{'-quick' if quick else ''}.png").stat().st_size > 10_000
