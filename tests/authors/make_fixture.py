"""Make the fixtures that tie sss-rt's import of the authors' network to their own graph.

    pip install tensorflow-cpu tf-slim                 # TensorFlow 2.x; not needed by the tests
    python tests/authors/make_fixture.py --authors-src PATH/TO/SIGGRAPH18SSS

``PATH/TO/SIGGRAPH18SSS`` is a checkout of github.com/iyah4888/SIGGRAPH18SSS; their source runs
unmodified under ``compat.v1`` with the import-time patch documented in
``benchmarks/authors_tf.py``. Writes, beside this file:

- ``parity.npz``: two crops of an example photo (53×67: odd sizes; 60×64: even), their
  features from the authors' graph with :func:`sss_rt.families.authors_graph.random_weights`
  (seed 0, every variable, moving statistics included), the seed, and the TensorFlow version.
  The 275 MB checkpoint TensorFlow wrote is not kept: the tests regenerate the same weights.
- ``checkpoints/``: small checkpoints written by TensorFlow's own ``SaveV2`` op for the reader
  tests: ``many`` (9,000 float32 / int64 / float64 / int32 / float16 / bool / uint8 tensors:
  several index blocks), ``sliced`` (a tensor saved as a slice of a larger one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CROPS = ((53, 67, 100, 150), (60, 64, 210, 260))  # height, width, top, left
SEED = 0


def many_tensors() -> dict[str, np.ndarray]:
    """The ``many`` checkpoint's tensors: deterministic, of every dtype the reader supports."""
    rng = np.random.default_rng(7)
    out: dict[str, np.ndarray] = {}
    kinds = [np.float32, np.int64, np.float64, np.int32, np.float16, np.bool_, np.uint8]
    for i in range(9000):
        kind = kinds[i % len(kinds)]
        shape = [(), (3,), (2, 5), (1, 2, 3)][i % 4]
        value = rng.standard_normal(shape) * 100
        out[f"block{i // 100:03d}/layer_{i:05d}/weights"] = np.asarray(value).astype(kind)
    out["global_step"] = np.array(60000, np.int64)
    return out


def write_reader_checkpoints(folder: Path) -> None:
    """SaveV2 in eager mode (TensorFlow 2's default) for the reader's test checkpoints."""
    import tensorflow as tf

    for sub in ("many", "sliced"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    many = many_tensors()
    names = sorted(many)
    tf.raw_ops.SaveV2(
        prefix=str(folder / "many" / "model.ckpt-60000"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(many[n]) for n in names],
    )
    (folder / "many" / "checkpoint").write_text(
        'model_checkpoint_path: "/home/someone/snapshots/model.ckpt-60000"\n'
        'all_model_checkpoint_paths: "/home/someone/snapshots/model.ckpt-60000"\n'
    )
    part = np.arange(12, dtype=np.float32).reshape(2, 6)
    tf.raw_ops.SaveV2(
        prefix=str(folder / "sliced" / "model.ckpt"),
        tensor_names=["partitioned/weights", "plain/biases"],
        shape_and_slices=["4 6 0,2:-", ""],
        tensors=[tf.constant(part), tf.constant(np.ones(3, np.float32))],
    )


def write_parity(src: str, out: Path) -> None:
    import tempfile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from authors_tf import AuthorsGraph
    from PIL import Image

    from sss_rt.bundled import examples_dir
    from sss_rt.families.authors_graph import random_weights, variable_spec

    graph = AuthorsGraph(src, threads=2)
    variables = graph.variables()
    spec = variable_spec()
    missing = sorted(set(spec) - set(variables))
    wrong = [n for n in spec if n in variables and tuple(variables[n].shape) != spec[n]]
    if missing or wrong:
        raise SystemExit(f"their graph disagrees with variable_spec: {missing[:3]} {wrong[:3]}")
    weights = random_weights(SEED, moving_statistics=True)
    graph.assign(weights)
    with tempfile.TemporaryDirectory() as tmp:  # the checkpoint round trip, as users have it
        graph.restore(graph.save(str(Path(tmp) / "model.ckpt")))
    photo = np.asarray(Image.open(examples_dir() / "astronaut.jpg").convert("RGB"))
    arrays: dict[str, np.ndarray] = {}
    for i, (h, w, top, left) in enumerate(CROPS):
        crop = np.ascontiguousarray(photo[top : top + h, left : left + w])
        arrays[f"image{i}"] = crop
        arrays[f"features{i}"] = graph.features(crop).astype(np.float32)
    import tensorflow as tf

    info = {
        "seed": SEED,
        "tensorflow": tf.__version__,
        "variables_in_graph": len(variables),
        "variables_read": len(spec),
    }
    np.savez_compressed(out, info=json.dumps(info), **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors-src", required=False, help="checkout of SIGGRAPH18SSS")
    parser.add_argument("--reader-only", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader_only:  # run in its own process: eager mode, before compat.v1 disables it
        write_reader_checkpoints(Path(args.reader_only))
        return
    if not args.authors_src:
        parser.error("--authors-src is required")
    folder = HERE / "checkpoints"
    subprocess.run([sys.executable, __file__, "--reader-only", str(folder)], check=True)
    write_parity(args.authors_src, HERE / "parity.npz")
    print(f"wrote {HERE / 'parity.npz'} and {folder}")


if __name__ == "__main__":
    main()
