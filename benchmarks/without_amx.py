"""int8 on this CPU with its AMX and BF16 units switched off — an emulation of a CPU with
AVX-512 VNNI but no AMX, not a measurement of one.

    python benchmarks/without_amx.py [--size 1000] [--runs 3]

The measurement runs in a subprocess with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` (OpenVINO's
oneDNN then uses neither AMX nor AVX512-BF16) and ``SSS_RT_CPU_FLAGS`` without the amx, bf16 and
fp16 flags (so the project picks what it would pick on such a CPU: the int8 head kernel on
VNNI, ``auto`` = fp32). Side by side in alternating rounds: the network at ``size``² (the
default fp32 split path vs int8), and ``Extractor.extract`` end to end (fp32 vs int8). The
caches, memory system and clock are this CPU's: a real VNNI-only CPU differs. Writes
benchmarks/results/without_amx.json and benchmarks/RESULTS-without-amx.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import machine, save_json, save_markdown  # noqa: E402

HIDDEN = ("amx", "bf16", "fp16")


def measure(size: int, runs: int) -> dict:
    """In this process (started with the emulation's environment)."""
    import time

    import cv2

    from sss_rt import Extractor
    from sss_rt.backends import create_backend
    from sss_rt.extractor import default_model_path, examples_dir
    from sss_rt.io.images import load_image
    from sss_rt.precision import head_variant, int8_unit, resolve_precision

    photo = sorted(examples_dir().glob("*.jpg"))[0]
    image = cv2.resize(load_image(photo), (size, size), interpolation=cv2.INTER_AREA)
    network: dict[str, list[float]] = {"fp32 split (default)": [], "int8": []}
    cases = {"fp32 split (default)": ("onnxruntime", "fp32"), "int8": ("openvino", "int8")}
    for _ in range(2):  # alternating rounds: this machine's speed drifts
        for name, (backend, precision) in cases.items():
            be = create_backend(backend, default_model_path(), device="cpu", threads=2,
                                precision=precision)  # fmt: skip
            be.features(image).materialize()  # warm-up
            for _ in range(runs):
                t = time.perf_counter()
                be.features(image).materialize()
                network[name].append(time.perf_counter() - t)
            be.close()
    ends: dict[str, list[float]] = {"fp32": [], "int8": []}
    extractors = {p: Extractor(device="cpu", threads=2, precision=p) for p in ends}
    for e in extractors.values():
        e.extract(image)
    for _ in range(runs):
        for p, e in extractors.items():
            t = time.perf_counter()
            e.extract(image)
            ends[p].append(time.perf_counter() - t)
    for e in extractors.values():
        e.close()
    med = {k: float(np.median(v)) for k, v in network.items()}
    end = {k: float(np.median(v)) for k, v in ends.items()}
    return {
        "int8_unit": int8_unit(),
        "auto_picks": resolve_precision("auto"),
        "int8_head": head_variant("int8"),
        "network_s": med,
        "network_runs_s": network,
        "network_int8_speedup": med["fp32 split (default)"] / med["int8"],
        "extract_s": end,
        "extract_runs_s": ends,
        "extract_int8_speedup": end["fp32"] / end["int8"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(measure(args.size, args.runs)))
        return
    m = machine()
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
    kept = " ".join(f for f in flags.split(":", 1)[1].split() if not any(h in f for h in HIDDEN))
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "SSS_RT_CPU_FLAGS": kept}
    cmd = [sys.executable, __file__, "--inner", "--size", str(args.size), "--runs", str(args.runs)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    result = {"machine": m, "size": args.size, "runs": args.runs, **r}
    save_json("without_amx", result)
    n = args.size
    lines = [
        "# int8 without AMX (emulated on an AMX CPU)",
        "",
        f"`python benchmarks/without_amx.py --size {n} --runs {args.runs}`. CPU: {m['cpu']}, "
        f"{m['cores']} cores; flags: {' '.join(m['cpu_flags'])}. Run with oneDNN limited to "
        "AVX512_CORE_VNNI and the amx/bf16/fp16 flags hidden from the project: what a CPU with "
        "AVX-512 VNNI and no AMX would run, on this CPU's cores, caches and clock — an "
        "emulation, not a measurement of such a CPU.",
        "",
        f"int8 runs on: {r['int8_unit']}; int8 head kernel: {r['int8_head']}; `auto` picks "
        f"{r['auto_picks']}.",
        "",
        f"| {n}×{n} | fp32 (default) | int8 | int8 speed-up |",
        "| --- | --- | --- | --- |",
        f"| network (median of {2 * args.runs}) | {r['network_s']['fp32 split (default)']:.3f} s "
        f"| {r['network_s']['int8']:.3f} s | **{r['network_int8_speedup']:.2f}×** |",
        f"| `extract` end to end (median of {args.runs}) | {r['extract_s']['fp32']:.3f} s | "
        f"{r['extract_s']['int8']:.3f} s | {r['extract_int8_speedup']:.2f}× |",
        "",
    ]
    save_markdown("without-amx", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
