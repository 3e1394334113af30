"""Timing ``sss-rt extract``'s path, stage by stage: the measurements ``sss-rt bench`` and
``benchmarks/`` share.

Each case of :func:`run_case` runs in a fresh interpreter (``python -m sss_rt.benchmark JSON``),
so that its peak RSS is its own; it times ``Extractor.extract`` on a JPEG file with the stage
timings the pipeline itself records, then the default outputs' writing.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: the stages ``Extractor.extract`` records, then the writing of the outputs
STAGES = ("decode", "network", "guided_filter", "pca", "normalize", "write")


def test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like RGB test image (smooth regions plus texture)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 64, 2), max(width // 64, 2), 3), dtype=np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def summarize(samples: list[float]) -> dict[str, float]:
    """Median, 90th percentile and count of timing samples (seconds)."""
    arr = np.asarray(samples)
    return {
        "median_s": float(np.median(arr)),
        "p90_s": float(np.percentile(arr, 90)),
        "runs": len(samples),
    }


def time_it(fn: Callable[[], Any], runs: int, warmup: int = 1) -> dict[str, float]:
    """``fn()`` timed ``runs`` times after ``warmup`` calls: :func:`summarize` of the samples."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return summarize(samples)


def time_extraction(
    model: str, backend: str, height: int, width: int, runs: int, threads: int | None = None
) -> dict[str, Any]:
    """Stage timings (median, p90 over ``runs`` after a warm-up) of one image's extraction
    with the default formats, exactly as ``sss-rt extract`` runs it."""
    import cv2

    from sss_rt.extractor import Extractor
    from sss_rt.io.writers import write_output

    work = Path(tempfile.mkdtemp(prefix="sss-bench-"))
    src = work / "x.jpg"
    cv2.imwrite(str(src), test_image(height, width)[..., ::-1])
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals = []
    with Extractor(model, backend=backend, device="cpu", threads=threads) as ex:
        for rep in range(runs + 1):
            stages: dict[str, float] = {}
            t0 = time.perf_counter()
            r = ex.extract(src, return_features=True, timings=stages)
            t1 = time.perf_counter()
            for fmt in ("npz", "png"):
                write_output(
                    fmt, work / f"x.{fmt}", image=r.image, embedding=r.embedding,
                    features=r.features,
                )  # fmt: skip
            stages["write"] = time.perf_counter() - t1
            if rep == 0:
                continue  # warm-up
            for name in STAGES:
                per_stage[name].append(stages.get(name, 0.0))
            totals.append(time.perf_counter() - t0)
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    return {
        "backend": backend,
        "size": [height, width],
        "megapixels": height * width / 1e6,
        "stages": {k: summarize(v) for k, v in per_stage.items()},
        "total": summarize(totals),
    }


def run_case(**case: Any) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "sss_rt.benchmark", json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else "failed", **case}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    result = time_extraction(**json.loads(sys.argv[1]))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(result))
