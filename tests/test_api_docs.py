"""The public API's docstrings: their examples run (doctests), and docs/api is current."""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
from build_api import MODULES  # noqa: E402


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_the_main_entry_points_have_examples_that_ran():
    ran = 0
    for name in ("sss_rt.extractor", "sss_rt.bands"):
        ran += doctest.testmod(importlib.import_module(name)).attempted
    assert ran >= 4
