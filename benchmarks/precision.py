"""Network precision on this CPU: fp32, bf16 and int8, side by side in one run.

    python benchmarks/precision.py [--size 1000] [--runs 5]

Writes benchmarks/results/precision.json and benchmarks/RESULTS-precision.md: the network's
time at 1 MP for every precision and engine (the split paths: trunk + compiled head over all
rows; the whole graphs: what a CPU user would run instead), the head kernels alone,
``sss-rt extract``'s path end to end (Extractor.extract on a 1 MP photo: fp32 vs auto vs int8),
the network's operation count (convolution MACs from the graph's inferred shapes) and achieved
GMAC/s next to this CPU's peak, the bf16 and int8 embeddings' error against fp32 on the example
photos, and the CPU's flags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import machine, save_json, save_markdown  # noqa: E402

from sss_rt.benchmark import summarize, time_it  # noqa: E402


def conv_macs(model_path: Path, h: int, w: int) -> float:
    """Multiply-accumulates of every Conv for one h×w image (shapes inferred by onnx)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(model_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, h, w, 3), strict=True):
        d.ClearField("dim_param")
        d.dim_value = v
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    total = 0.0
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        out = shapes.get(node.output[0])
        wname = node.input[1]
        wshape = inits.get(wname)
        if wshape is None and wname in producers:  # fp16-stored weights behind a Cast
            wshape = inits.get(producers[wname].input[0])
        if not out or not wshape or 0 in out:
            continue
        total += float(np.prod(out)) * float(np.prod(wshape[1:]))
    return total


#: MACs per cycle per core of each unit (AVX-512: two 16-lane FMA ports; AMX: one 16×16×32
#: bf16 TDPBF16PS or 16×16×64 int8 TDPBUSD per 16 cycles)
PEAK_MACS_PER_CYCLE = {"fp32 AVX-512": 32, "bf16 AMX": 512, "int8 AMX": 1024}


def split_macs(h: int, w: int) -> float:
    """MACs of the split path: the trunk's convolutions (from its graph) plus the head's
    full-resolution work (input-tap projection 4→512 and last conv 512→128 per pixel, the
    pool1 projection 124→512 at 1/16 of the pixels)."""
    import onnx

    from sss_rt.extractor import default_model_path
    from sss_rt.families.hypercolumn import split_model

    trunk, wts = split_model(onnx.load(str(default_model_path())))
    path = HERE / "results" / "trunk.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(trunk)
    try:
        trunk_macs = conv_macs(path, h, w)
    finally:
        path.unlink()
    mid, cin = wts.fuse_input.shape
    per_pixel = mid * cin + wts.head.size + wts.fuse_pool1.size / 16
    return trunk_macs + per_pixel * h * w


def cpu_peak_gmacs(cores: int) -> dict[str, float | None]:
    """Peak GMAC/s of each unit this CPU has, at the clock /proc/cpuinfo reports."""
    from sss_rt.precision import cpu_flags

    flags = cpu_flags()
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":", 1)[1])
                break
    except OSError:
        pass
    has = {
        "fp32 AVX-512": "avx512f" in flags,
        "bf16 AMX": "amx_bf16" in flags,
        "int8 AMX": "amx_int8" in flags,
    }
    return {
        unit: (PEAK_MACS_PER_CYCLE[unit] * cores * mhz / 1e3 if has[unit] and mhz else None)
        for unit in PEAK_MACS_PER_CYCLE
    }


CASES = (
    ("fp32 split, ONNX Runtime (default)", "onnxruntime", {"precision": "fp32"}),
    ("bf16 split, OpenVINO + AMX head", "openvino", {"precision": "bf16"}),
    ("int8 split, OpenVINO + AMX head", "openvino", {"precision": "int8"}),
    ("int8 split, ONNX Runtime", "onnxruntime", {"precision": "int8"}),
    ("OpenVINO bf16 whole graph (peer)", "openvino", {"precision": "bf16", "execution": "whole"}),
    ("OpenVINO fp32 whole graph", "openvino", {"precision": "fp32", "execution": "whole"}),
    ("ONNX Runtime fp32 whole graph", "onnxruntime", {"precision": "fp32", "execution": "whole"}),
)


def rounds(cases: dict, runs: int) -> dict[str, list[float]]:
    """Each case once to warm up, then ``runs`` rounds of every case in turn: seconds each."""
    import time

    for fn in cases.values():
        fn()
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def main() -> None:
    from sss_rt import Extractor, native
    from sss_rt.backends import create_backend
    from sss_rt.extractor import default_model_path, examples_dir
    from sss_rt.head import HeadSource
    from sss_rt.io.images import load_image
    from sss_rt.precision import bf16_unit, resolve_precision

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.size
    photos = sorted(examples_dir().glob("*.jpg"))
    image = cv2.resize(load_image(photos[0]), (n, n), interpolation=cv2.INTER_AREA)
    model = default_model_path()
    macs = conv_macs(model, n, n)
    smacs = split_macs(n, n)
    m = machine()
    result: dict = {
        "machine": m,
        "size": [n, n],
        "network_gmac_whole_graph": macs / 1e9,
        "network_gmac_split": smacs / 1e9,
        "cpu_peak_gmac_per_s": cpu_peak_gmacs(m["cores"]),
        "auto_picks": resolve_precision("auto"),
        "cases": {},
    }
    bf16_ok = bf16_unit() is not None
    # the network cases one after another, each alone in memory (the whole graphs hold GBs of
    # activations: alternated with them, the split cases measured 10-20% slower)
    for name, backend, opts in CASES:
        if opts["precision"] == "bf16" and not bf16_ok:
            continue
        be = create_backend(backend, model, device="cpu", threads=2, **opts)
        stats = time_it(lambda be=be: be.features(image).materialize(), args.runs)
        work = macs if opts.get("execution") == "whole" else smacs
        stats["gmac_per_s"] = work / 1e9 / stats["median_s"]
        stats["describe"] = be.describe()
        result["cases"][name] = stats
        be.close()
    base = result["cases"]["fp32 split, ONNX Runtime (default)"]["median_s"]
    for stats in result["cases"].values():
        stats["speedup_vs_default"] = base / stats["median_s"]
    # the head alone, over all rows, from one trunk run
    be = create_backend("onnxruntime", model, device="cpu", threads=2)
    src = be.features(image)
    heads = {"fp32 (fused hidden kernel + BLAS GEMM)": None}
    heads.update({f"{'int8' if 'int8' in v else 'bf16'} {v}": v for v in native.head_variants()})
    result["head_1mp"] = {}
    for name, variant in heads.items():
        hs = HeadSource(src.w, src.t_in, src.t_p1, src.deep, threads=2, bf16=variant)
        stats = time_it(lambda hs=hs: hs.rows(0, n), args.runs)
        stats["gmac_per_s"] = src.w.head.size * n * n / 1e9 / stats["median_s"]
        result["head_1mp"][name] = stats
    be.close()
    # `extract` end to end: the three precisions in alternating rounds (this machine's speed
    # drifts; a ratio is only fair between cases measured side by side)
    ends: dict = {}
    extractors = {
        p: Extractor(device="cpu", threads=2, precision=p) for p in ("fp32", "auto", "int8")
    }
    samples = rounds(
        {p: (lambda ex=ex: ex.extract(image)) for p, ex in extractors.items()}, args.runs
    )
    for precision, ex in extractors.items():
        ends[precision] = summarize(samples[precision])
        ends[precision]["backend"] = ex.backend.describe()
        ex.close()
    for precision in ("auto", "int8"):
        ends[f"{precision}_speedup"] = ends["fp32"]["median_s"] / ends[precision]["median_s"]
    result["extract_1mp"] = ends
    errors: dict[str, list] = {}
    with Extractor(device="cpu") as fp32:
        refs = [
            (p.name, cv2.resize(load_image(p), (640, 480), interpolation=cv2.INTER_AREA))
            for p in photos
        ]
        refs = [(name, photo, fp32.extract(photo).embedding) for name, photo in refs]
    for precision in ("bf16", "int8") if bf16_ok else ("int8",):
        with Extractor(device="cpu", precision=precision) as ex:
            errors[precision] = []
            for name, photo, ref in refs:
                d = np.abs(ex.extract(photo).embedding - ref)
                errors[precision].append({
                    "photo": name, "mean": float(d.mean()), "p99": float(np.percentile(d, 99)),
                    "max": float(d.max()),
                })  # fmt: skip
    result["embedding_vs_fp32_640x480"] = errors
    save_json("precision", result, default=str)
    peak = result["cpu_peak_gmac_per_s"]
    peaks = ", ".join(
        f"{unit} {v:.0f}" if v else f"{unit}: not on this CPU (no figure claimed)"
        for unit, v in peak.items()
    )
    lines = [
        "# Network precision on the CPU",
        "",
        f"`python benchmarks/precision.py --size {n} --runs {args.runs}`, 2 threads, medians "
        f"of {args.runs} runs (each network case alone; `extract` in alternating rounds). "
        f"CPU: {m['cpu']}, {m['cores']} cores; flags: {' '.join(m['cpu_flags'])}. "
        f"`--precision auto` picks **{result['auto_picks']}** here.",
        "",
        f"Network at {n}×{n}: {macs / 1e9:.1f} GMAC of convolutions on the whole graph (from its "
        f"inferred shapes); the split path's count (trunk graph + head per pixel) is "
        f"{smacs / 1e9:.1f} GMAC — the exported graph already projects before upsampling, so "
        "the split saves memory, not operations. GMAC/s is each path's own count over its time. "
        f"This CPU's peak (GMAC/s, {m['cores']} cores at the clock /proc/cpuinfo reports): "
        f"{peaks}.",
        "",
        "| case | network median | vs default | GMAC/s |",
        "| --- | --- | --- | --- |",
    ]
    for name, s in result["cases"].items():
        lines.append(
            f"| {name} | {s['median_s']:.3f} s | {s['speedup_vs_default']:.2f}× | "
            f"{s['gmac_per_s']:.0f} |"
        )
    peer = result["cases"].get("OpenVINO bf16 whole graph (peer)")
    if peer:
        for name in ("bf16 split, OpenVINO + AMX head", "int8 split, OpenVINO + AMX head"):
            if name in result["cases"]:
                r = peer["median_s"] / result["cases"][name]["median_s"]
                lines.append(f"\n{name} vs the OpenVINO bf16 whole graph: {r:.2f}×.")
    lines += [
        "",
        f"The head alone over all {n} rows (from one fp32 trunk run; last conv "
        f"{src.w.head.size * n * n / 1e9:.1f} GMAC):",
        "",
        "| head kernel | median | last-conv GMAC/s |",
        "| --- | --- | --- |",
        *[
            f"| {k} | {v['median_s']:.3f} s | {v['gmac_per_s']:.0f} |"
            for k, v in result["head_1mp"].items()
        ],
        "",
        f"`Extractor.extract` at {n}×{n} (the `sss-rt extract` path): fp32 "
        f"{ends['fp32']['median_s']:.2f} s, auto ({ends['auto']['backend']['precision']}) "
        f"{ends['auto']['median_s']:.2f} s ({ends['auto_speedup']:.2f}×), int8 "
        f"{ends['int8']['median_s']:.2f} s ({ends['int8_speedup']:.2f}×).",
    ]
    for precision, rows in errors.items():
        lines += [
            "",
            f"{precision} vs fp32 embedding (exact post-processing, 640×480):",
            "",
            "| photo | mean abs | p99 | max |",
            "| --- | --- | --- | --- |",
            *[
                f"| {e['photo']} | {e['mean']:.4f} | {e['p99']:.4f} | {e['max']:.3f} |"
                for e in rows
            ],
        ]
    save_markdown("precision", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
