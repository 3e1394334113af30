"""Regenerate benchmarks/results/results.json, RESULTS.md and the plots in one command.

    python benchmarks/run.py            # full (under 20 minutes on 2 cores)
    python benchmarks/run.py --quick    # smaller sizes, fewer runs (under 3 minutes)

Every figure comes from this run; ratios compare measurements made side by side here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from harness import machine, run_isolated

from sss_rt.extractor import default_model_path
from sss_rt.model_info import read_model_info

HERE = Path(__file__).parent


def peer_postprocess(python: str, h: int, w: int, c: int, runs: int) -> dict:
    script = HERE / "peer_postprocess.py"
    proc = subprocess.run(
        [python, str(script), str(h), str(w), str(c), str(runs), "5", "0.01"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def progress(section: str, t_start: float) -> None:
    print(f"[{time.perf_counter() - t_start:6.0f} s] {section}", file=sys.stderr, flush=True)


def _md_path(out: Path, quick: bool) -> Path:
    """RESULTS.md beside the default results folder, else inside the chosen one."""
    name = "RESULTS-quick.md" if quick else "RESULTS.md"
    return HERE / name if out.resolve() == (HERE / "results").resolve() else out / name


def loglog_slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=None, help="ONNX model (default: the bundled one)")
    ap.add_argument(
        "--peer-python",
        default=str(Path(".venv-peer") / "bin" / "python"),
        help="python of an env with opencv-contrib (benchmarks/setup_peer_env.sh)",
    )
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--report-only", metavar="JSON", help="re-render a results JSON, run nothing")
    args = ap.parse_args()
    from report import write_report

    out = Path(args.out)
    if args.report_only:
        res = json.loads(Path(args.report_only).read_text())
        write_report(res, out, _md_path(out, res["quick"]))
        return
    model = args.model or str(default_model_path())
    quick = args.quick
    runs = 2 if quick else 5
    net_size = (256, 256) if quick else (512, 512)
    t_start = time.perf_counter()
    res: dict = {
        "machine": machine(),
        "model": model,
        "quick": quick,
        "command": "python benchmarks/run.py" + (" --quick" if quick else ""),
    }

    progress("network: backends, optimization levels, threads", t_start)
    h, w = net_size
    net = [
        run_isolated(
            "network", model=model, backend="torch", height=h, width=w, runs=runs, threads=2
        )
    ]
    for level in ("all", "extended", "basic", "disable"):
        for threads in (1, 2):
            if (quick and (level in ("extended", "basic") or threads == 1)) or (
                threads == 1 and level != "all"
            ):
                continue
            ratio_pair = level == "all" and threads == 2  # the one compared with torch
            net.append(
                run_isolated(
                    "network",
                    model=model,
                    backend="onnxruntime",
                    height=h,
                    width=w,
                    runs=runs if ratio_pair else 2,
                    threads=threads,
                    graph_optimization=level,
                )
            )
    for split in ("onnxruntime-split", "torch-split"):  # how `sss-rt extract` runs them
        net.append(
            run_isolated(
                "network", model=model, backend=split, height=h, width=w, runs=runs, threads=2
            )
        )
    res["network"] = net
    progress("training vs inference form; op profile", t_start)
    backbone = read_model_info(model).backbone
    res["forms"] = run_isolated(
        "training_form", backbone=backbone, height=h, width=w, runs=3 if not quick else 2
    )
    res["op_profile"] = run_isolated("profile", model=model, height=h, width=w)

    progress("pipeline stages per backend and size", t_start)
    sizes = [(512, 512)] if quick else [(512, 512), (768, 1024)]
    res["pipeline"] = [
        run_isolated(
            "pipeline",
            model=model,
            backend=be,
            height=sh,
            width=sw,
            runs=2 if sh * sw > 5e5 else runs,
            threads=2,
        )
        for sh, sw in sizes
        for be in ("onnxruntime", "torch")
        if not (be == "torch" and sh * sw > 2e6)
    ]

    progress("post-processing vs peer", t_start)
    ph, pw = (384, 512) if quick else (768, 1024)
    res["postprocess"] = {
        "ours": run_isolated("postprocess", height=ph, width=pw, channels=128, runs=runs),
        "ours_numpy": run_isolated(
            "postprocess", height=ph, width=pw, channels=128, runs=1,
            engine="numpy",
        ),
        "ours_fast": run_isolated(
            "postprocess", height=ph, width=pw, channels=128, runs=runs, mode="fast"
        ),
        "ours_matlab": run_isolated(
            "postprocess", height=ph, width=pw, channels=128, runs=1,
            mode="matlab",
        ),
        "peer_ximgproc_numpy": peer_postprocess(args.peer_python, ph, pw, 128, runs),
    }  # fmt: skip
    # this machine's speed drifts within minutes: the peer and both modes again, alternating,
    # so that the ratios also come as medians over rounds measured side by side
    res["postprocess"]["rounds"] = [
        {
            "peer": peer_postprocess(args.peer_python, ph, pw, 128, 3),
            "exact": run_isolated("postprocess", height=ph, width=pw, channels=128, runs=3),
            "fast": run_isolated(
                "postprocess", height=ph, width=pw, channels=128, runs=3, mode="fast"
            ),
        }
        for _ in range(1 if quick else 3)
    ]
    progress("fast mode error", t_start)
    res["fast_error"] = run_isolated("fast_error", model=model, height=ph, width=pw)

    progress("scaling: sss-rt extract, tiled (default) and whole-image", t_start)
    sides = [512, 1024] if quick else [512, 1024, 2048, 4096]
    points = [run_isolated("extract_large", height=n, width=n, model=model) for n in sides]
    points += [
        run_isolated("extract_large", height=n, width=n, model=model, tiling=False)
        for n in ([512] if quick else [512, 1024])
    ]
    ok = [p for p in points if "error" not in p and p["tiling"]]
    res["scaling"] = {
        "points": points,
        "time_slope": loglog_slope([p["megapixels"] for p in ok], [p["wall_s"] for p in ok])
        if len(ok) > 1
        else None,
        "rss_slope": loglog_slope([p["megapixels"] for p in ok], [p["peak_rss_mb"] for p in ok])
        if len(ok) > 1
        else None,
    }
    res["wall_time_s"] = time.perf_counter() - t_start

    out.mkdir(parents=True, exist_ok=True)
    name = "results-quick.json" if quick else "results.json"
    (out / name).write_text(json.dumps(res, indent=2))
    write_report(res, out, _md_path(out, quick))
    print(f"done in {res['wall_time_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
