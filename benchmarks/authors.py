"""The authors' own extractor (TensorFlow, CPU) against sss-rt on the imported model.

    pip install tensorflow-cpu tf-slim        # in a second environment: --tf-python
    python benchmarks/authors.py --authors-src PATH/TO/SIGGRAPH18SSS --tf-python TFENV/bin/python

Both sides run the same weights (``random_weights(0)``: speed does not depend on the values)
on the same 640×480 photo, on the same machine, each measurement in its own process (so that
peak RSS is the process's own), in alternating rounds (TensorFlow, sss-rt, TensorFlow, …),
with the same thread count. TensorFlow runs the authors' unmodified graph as their
``main_hyper.py`` feeds it (``benchmarks/authors_tf.py``) and writes the checkpoint; sss-rt
imports that checkpoint with ``sss-rt import-authors`` and runs it with ``--precision auto``.

Per process: ``load`` (graph or model set-up), ``first`` (the first image, warm-up included),
``steady`` (median of the next ``--repeat`` images), peak RSS. For sss-rt, ``network`` is the
128-d features alone (what the authors' extractor computes) and ``extract`` the 3-d
descriptors (network + exact post-processing), which the authors' code does not compute at
all (their MATLAB post-processing is not timed). Rows at 1 MP and 12 MP run sss-rt alone.

Results: ``benchmarks/results/authors.json`` and ``benchmarks/RESULTS-authors.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def photo(width: int, height: int) -> np.ndarray:
    """The astronaut example photo resized to width×height (RGB uint8)."""
    import cv2
    from PIL import Image

    from sss_rt.bundled import examples_dir

    rgb = np.asarray(Image.open(examples_dir() / "astronaut.jpg").convert("RGB"))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


def worker_tf(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(HERE))
    from authors_tf import AuthorsGraph

    from sss_rt.families.authors_graph import random_weights

    image = photo(args.width, args.height)
    t0 = time.perf_counter()
    graph = AuthorsGraph(args.authors_src, threads=args.threads)
    graph.assign(random_weights(0))
    load = time.perf_counter() - t0
    if args.save:
        graph.save(args.save)
    t0 = time.perf_counter()
    graph.features(image)
    first = time.perf_counter() - t0
    steady = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        graph.features(image)
        steady.append(time.perf_counter() - t0)
    return {"load": load, "first": first, "steady": statistics.median(steady), "runs": steady}


def worker_sss(args: argparse.Namespace) -> dict:
    from sss_rt import Extractor

    image = photo(args.width, args.height)
    t0 = time.perf_counter()
    ex = Extractor(model=args.model, precision=args.precision, threads=args.threads)
    load = time.perf_counter() - t0
    run = ex.features if args.what == "network" else ex.extract
    t0 = time.perf_counter()
    run(image)
    first = time.perf_counter() - t0
    steady = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        run(image)
        steady.append(time.perf_counter() - t0)
    out = {"load": load, "first": first, "runs": steady}
    out["steady"] = statistics.median(steady) if steady else first
    out["backend"] = ex.backend.describe()
    ex.close()
    return out


def spawn(python: str, argv: list[str]) -> dict:
    """One worker in its own process; its result line is the last line of its stdout."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [python, __file__, *argv], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"worker {argv[:2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu() -> dict:
    from sss_rt.precision import cpu_flags, resolve_precision

    name = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    return {
        "model": name,
        "cores": os.cpu_count(),
        "flags": flags,
        "auto_precision": resolve_precision("auto"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors-src", help="checkout of github.com/iyah4888/SIGGRAPH18SSS")
    parser.add_argument("--tf-python", help="a Python with tensorflow-cpu and tf-slim")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="images after the first")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--large", action="store_true", help="also the 12 MP row (~10 min)")
    parser.add_argument("--worker", choices=["tf", "sss"], help=argparse.SUPPRESS)
    parser.add_argument("--what", default="network", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=640, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=480, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker_tf(args) if args.worker == "tf" else worker_sss(args)
        result["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(result))
        return
    if not args.authors_src or not args.tf_python:
        parser.error("--authors-src and --tf-python are required")
    common = ["--threads", str(args.threads), "--repeat", str(args.repeat)]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = str(Path(tmp) / "authors.onnx")
        for r in range(args.rounds):
            save = ["--save", str(Path(tmp) / "model" / "model.ckpt")] if r == 0 else []
            tf_argv = ["--worker", "tf", "--authors-src", args.authors_src, *common, *save]
            tf = spawn(args.tf_python, tf_argv)
            rows.append({"round": r, "side": "tensorflow (authors' graph)", **tf})
            print(f"round {r}: tensorflow {tf['steady']:.2f} s, {tf['peak_rss_gb']:.2f} GB")
            if r == 0:
                subprocess.run(
                    [sys.executable, "-m", "sss_rt", "import-authors", str(Path(tmp) / "model"),
                     "-o", model], check=True, capture_output=True,
                )  # fmt: skip
            for what in ("network", "extract"):
                argv = ["--worker", "sss", "--model", model, "--what", what, *common]
                res = spawn(sys.executable, [*argv, "--precision", args.precision])
                rows.append({"round": r, "side": f"sss-rt {what}", **res})
                print(f"round {r}: sss-rt {what} {res['steady']:.2f} s, "
                      f"{res['peak_rss_gb']:.2f} GB")  # fmt: skip
        sizes = [(1155, 866)] + ([(4000, 3000)] if args.large else [])
        for width, height in sizes:
            argv = ["--worker", "sss", "--model", model, "--what", "extract", "--threads",
                    str(args.threads), "--repeat", "0", "--width", str(width),
                    "--height", str(height), "--precision", args.precision]  # fmt: skip
            res = spawn(sys.executable, argv)
            rows.append({"round": None, "side": f"sss-rt extract {width}×{height}", **res})
            print(f"{width}×{height}: sss-rt extract {res['first']:.1f} s, "
                  f"{res['peak_rss_gb']:.2f} GB")  # fmt: skip
    report = {
        "command": "python benchmarks/authors.py " + " ".join(sys.argv[1:]),
        "cpu": cpu(),
        "threads": args.threads,
        "precision": args.precision,
        "rows": rows,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "authors.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report)


def write_markdown(report: dict) -> None:
    rows = report["rows"]

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["side"] == side)

    tf_side = "tensorflow (authors' graph)"
    lines = [
        "# The authors' extractor vs sss-rt on the imported model",
        "",
        f"`{report['command']}`",
        "",
        f"CPU: {report['cpu']['model']}, {report['cpu']['cores']} cores, flags "
        f"{' '.join(report['cpu']['flags'])}; `auto` picks {report['cpu']['auto_precision']}; "
        f"{report['threads']} threads each side; sss-rt `--precision {report['precision']}`.",
        "",
        "640×480 photo, medians over the rounds (each process: load, first image, median of "
        "the next images; peak RSS of the process):",
        "",
        "| side | load s | first s | steady s | peak RSS GB | steady vs TensorFlow |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    base = med(tf_side, "steady")
    for side in (tf_side, "sss-rt network", "sss-rt extract"):
        steady = med(side, "steady")
        lines.append(
            f"| {side} | {med(side, 'load'):.2f} | {med(side, 'first'):.2f} | {steady:.2f} | "
            f"{med(side, 'peak_rss_gb'):.2f} | {base / steady:.2f}× |"
        )
    lines += ["", "Per round (steady seconds):", ""]
    for r in sorted({r["round"] for r in rows if r["round"] is not None}):
        parts = [f"{x['side']} {x['steady']:.2f}" for x in rows if x["round"] == r]
        lines.append(f"- round {r}: " + ", ".join(parts))
    lines += ["", "sss-rt alone (`extract`, one image in a fresh process, exact mode):", ""]
    lines += ["| size | time s | peak RSS GB |", "| --- | --- | --- |"]
    for x in rows:
        if x["round"] is None:
            size = x["side"].rsplit(" ", 1)[1]
            lines.append(f"| {size} | {x['first']:.1f} | {x['peak_rss_gb']:.2f} |")
    (HERE / "RESULTS-authors.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
