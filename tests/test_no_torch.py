"""The runtime works in an environment without torch (import blocked in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import cv2
import numpy as np

BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any 'import torch' now raises ImportError
    """
)


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_and_extract_without_torch(onnx_path, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(
        str(src / "a.png"), np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)
    )
    out = tmp_path / "out"
    proc = run_without_torch(
        f"""
        import sss_rt
        from sss_rt import Extractor
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch was importable")
        from sss_rt.cli import main
        main(["extract", {str(src)!r}, "-o", {str(out)!r}, "-m", {str(onnx_path)!r},
              "-f", "npz", "-f", "png", "-q"])
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "a.npz").is_file() and (out / "a.embedding.png").is_file()
    assert "torch" not in proc.stderr


def test_torch_only_paths_say_what_to_install(onnx_path, tmp_path):
    proc = run_without_torch(
        f"""
        from sss_rt.cli import main
        main(["export", "ck.pt", {str(tmp_path / "x.onnx")!r}])
        """
    )
    assert proc.returncode == 5
    assert "pip install 'sss-rt[train]'" in proc.stderr and "Traceback" not in proc.stderr
