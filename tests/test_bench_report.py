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


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py")))
def test_every_benchmark_script_imports(script, monkeypatch):
    """A benchmark that cannot even import (a name moved elsewhere) fails here, not on the day
    someone needs its figures."""
    import importlib

    monkeypatch.syspath_prepend(str(BENCH))
    for name in [script, "harness"]:
        sys.modules.pop(name, None)
    importlib.import_module(script)


@pytest.mark.parametrize(("script", "json_name"), [("segment", "segment"), ("edges", "edges")])
def test_segmentation_reports_match_their_json(script, json_name, monkeypatch):
    """RESULTS-segment.md and RESULTS-edges.md are what their committed JSON renders to."""
    import importlib

    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module(script)
    written: dict[str, str] = {}
    monkeypatch.setattr(module, "save_markdown", lambda n, lines: written.update(
        {n: "\n".join(lines) + "\n"}))  # fmt: skip
    module.write_report(json.loads((BENCH / "results" / f"{json_name}.json").read_text()))
    ((name, text),) = written.items()
    assert text == (BENCH / f"RESULTS-{name}.md").read_text()
