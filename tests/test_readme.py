"""The README matches the program: every ``sss-rt`` command line in its code blocks runs, as
written, in a folder holding the files it names (small photos, the bundled model, a checkpoint
of the authors' network), and exits as the README says; its exit-code table covers every exit
the CLI gives.

Three lines cannot run here as written and are run in a stated form instead (``STAND_INS``):
training on COCO (no data set: the same command on synthetic scenes, two iterations), S3 input
on a Ray cluster (no network: the same command on a local folder and a local Ray), and the
TensorRT build (no TensorRT: run as written, it must say what is missing, exit 5).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: README lines that need what this machine cannot have, and the form run instead
STAND_INS = {
    "sss-rt train -o run/ --backbone resnet101 --data coco:IMAGES,instances.json,stuffmaps": (
        "sss-rt train -o run/ --backbone resnet18 --data synthetic --iterations 2 --crop 64 "
        "--pixels 50 --samplings 1"
    ),
    "sss-rt extract s3://bucket/photos -o /mnt/shared/out --ray auto --actors 16 --threads 4": (
        "sss-rt extract photos/ -o ray-out/ --ray local --actors 1 --threads 1"
    ),
}


def readme_commands() -> list[str]:
    """Every ``sss-rt …`` command of the README's fenced code blocks, comments stripped."""
    out = []
    in_block = False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        code = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
        for part in code.split("&&"):
            part = part.strip()
            if part.startswith("sss-rt "):
                out.append(" ".join(part.split()))
    return out


def expected_exit(command: str) -> int:
    if command.startswith("sss-rt build-engine") and (
        importlib.util.find_spec("tensorrt") is None or shutil.which("nvidia-smi") is None
    ):
        return 5  # TensorRT or a GPU is missing: one line says what to install
    return 0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """photos/, a.jpg, b.png, model.onnx (the bundled model) and the authors' checkpoint
    folder SIGGRAPH18SSS/model (seeded weights), as the README's commands expect them."""
    sys.path.insert(0, str(ROOT / "tests" / "authors"))
    from tf_writer import write_checkpoint

    from sss_rt.extractor import default_model_path
    from sss_rt.families import authors_graph

    ws = tmp_path_factory.mktemp("readme")
    rng = np.random.default_rng(7)
    (ws / "photos").mkdir()
    for name in ("cat.jpg", "dog.png"):
        small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        cv2.imwrite(str(ws / "photos" / name), np.repeat(np.repeat(small, 16, 0), 16, 1))
    shutil.copy(ws / "photos" / "cat.jpg", ws / "a.jpg")
    shutil.copy(ws / "photos" / "dog.png", ws / "b.png")
    shutil.copy(default_model_path(), ws / "model.onnx")
    weights = authors_graph.random_weights(0)
    write_checkpoint(ws / "SIGGRAPH18SSS" / "model" / "model.ckpt-60000", weights)
    return ws


def test_every_readme_command_is_known_here():
    """A README command added without being run here fails this test."""
    commands = readme_commands()
    assert len(commands) >= 20
    assert set(STAND_INS) <= set(commands), set(STAND_INS) - set(commands)


def test_every_readme_command_runs_as_written(workspace):
    env = {
        **__import__("os").environ,
        "SSS_RT_CACHE": str(workspace / "cache"),  # the int8 model made once, here
        "PYTHONUNBUFFERED": "1",
    }
    commands = readme_commands()
    # the checkpoint `export` reads is made by the training command, which the README lists
    # after it: run training first
    commands.sort(key=lambda c: not c.startswith("sss-rt train"))
    for written in commands:
        command = STAND_INS.get(written, written)
        argv = [sys.executable, "-m", "sss_rt", *shlex.split(command)[1:]]
        done = subprocess.run(
            argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == expected_exit(written), (
            f"{command}\nexit {done.returncode}\n{done.stderr[-2000:]}"
        )
        if done.returncode != 0:  # a refusal is one line, never a traceback
            assert "Traceback" not in done.stderr, done.stderr


def test_the_exit_code_table_covers_every_exit():
    """Every exit code the CLI can give (errors' codes, the batch's, click's) is a row."""
    from sss_rt import errors
    from sss_rt.cli import batch_run

    table = README.read_text().split("| exit code |", 1)[1].split("\n\n", 1)[0]
    rows = set(re.findall(r"^\| ([0-9 /]+) \|", table, re.MULTILINE))
    documented = {int(x) for row in rows for x in row.split("/")}
    codes = {0, 2}  # success; click's usage errors
    codes |= {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.SssRtError)
    }
    codes |= {v for k, v in vars(batch_run).items() if k.startswith("EXIT_")}
    assert codes <= documented, codes - documented
