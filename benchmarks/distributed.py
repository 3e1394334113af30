"""Throughput of extraction on Ray Data against `sss-rt extract`, on this machine.

    python benchmarks/distributed.py [--photos 40]

40 photos (the example photos, cropped and resized to distinct 640×480 images), extracted by
`sss-rt extract -o OUT --threads 2` and by `sss-rt extract --ray --actors 2 --threads 1` (a
local Ray instance), each into a fresh folder, one after the other, images per second including
start-up. Writes benchmarks/results/distributed.json and benchmarks/RESULTS-distributed.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import machine, save_json, save_markdown  # noqa: E402


def make_photos(folder: Path, count: int) -> None:
    from sss_rt.extractor import examples_dir
    from sss_rt.io.images import load_image

    bank = [load_image(p) for p in sorted(examples_dir().glob("*.jpg"))]
    for i in range(count):
        img = bank[i % len(bank)]
        h, w = img.shape[:2]
        dy, dx = (i * 7) % (h // 8), (i * 11) % (w // 8)  # a different crop each
        crop = img[dy : h - (h // 8 - dy), dx : w - (w // 8 - dx)]
        out = cv2.resize(crop, (640, 480), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"photo{i:03d}.png"), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        make_photos(src, args.photos)
        exe = [sys.executable, "-m", "sss_rt"]
        cli = timed([*exe, "extract", str(src), "-o", f"{tmp}/cli", "--threads", "2", "-q"])
        ray = timed([*exe, "extract", str(src), "-o", f"{tmp}/ray", "--ray", "--actors", "2",
                     "--threads", "1", "-q"])  # fmt: skip
    m = machine()
    result = {
        "machine": m,
        "photos": args.photos,
        "size": [480, 640],
        "cli_2_threads_s": cli,
        "ray_2_actors_1_thread_s": ray,
        "cli_images_per_s": args.photos / cli,
        "ray_images_per_s": args.photos / ray,
        "ray_vs_cli": cli / ray,
    }
    save_json("distributed", result)
    lines = [
        "# Extraction on Ray Data vs `sss-rt extract`",
        "",
        f"`python benchmarks/distributed.py --photos {args.photos}`. CPU: {m['cpu']}, "
        f"{m['cores']} cores; flags: {' '.join(m['cpu_flags'])}. {args.photos} distinct 640×480 "
        "photos, fp32 exact mode, each run from a fresh output folder, start-up included.",
        "",
        "| run | seconds | images/s |",
        "| --- | --- | --- |",
        f"| `sss-rt extract --threads 2` | {cli:.1f} | {args.photos / cli:.2f} |",
        f"| `sss-rt extract --ray --actors 2 --threads 1` (local Ray) | {ray:.1f} | "
        f"{args.photos / ray:.2f} |",
        "",
        f"Ray vs the CLI: **{cli / ray:.2f}×** the CLI's throughput.",
    ]
    save_markdown("distributed", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
