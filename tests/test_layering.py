"""The dependencies run one way: no module of the runtime (``sss_rt`` but its ``training`` and
``cli`` packages, and ``export``) imports the training package or the CLI — at its top or
inside a function, so every lazy path counts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABOVE = ("sss_rt.training", "sss_rt.cli")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _runtime_modules() -> list[Path]:
    files = [*(ROOT / "sss_rt").rglob("*.py"), *(ROOT / "export").rglob("*.py")]
    above = [ROOT / "sss_rt" / "training", ROOT / "sss_rt" / "cli", ROOT / "sss_rt" / "__main__.py"]
    return [f for f in files if not any(f == a or a in f.parents for a in above)]


def test_runtime_imports_neither_training_nor_cli():
    modules = _runtime_modules()
    assert len(modules) > 50 and ROOT / "sss_rt" / "backends" / "torch.py" in modules
    found = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if n.startswith(ABOVE))
        for path in modules
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_the_scan_sees_lazy_imports(tmp_path):
    """A function-level import is found (the torch backend's were)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from sss_rt.training.model import HypercolumnNet\n")
    assert "sss_rt.training.model" in _imports(module)


def test_every_package_is_in_the_wheel():
    """Every folder of ``sss_rt`` with an ``__init__.py`` is listed in pyproject.toml's packages
    (an editable install finds an unlisted one; a wheel leaves it out)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "sss_rt").rglob("__init__.py")
    }
    assert found - listed == set()
