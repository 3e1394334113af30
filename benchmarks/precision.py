"""Network precision on this CPU: fp32 vs int8, side by side in one run (one process each case).

    python benchmarks/precision.py [--size 1000] [--runs 5]

Writes benchmarks/results/precision.json and benchmarks/RESULTS-precision.md: the network's
time at 1 MP (the default split path: ONNX Runtime trunk + compiled head over all rows; and
ONNX Runtime's whole graph), ``sss-rt extract``'s path end to end (Extractor.extract on a 1 MP
photo), the network's operation count (convolution MACs from the graph's inferred shapes) and
achieved GMAC/s, the int8 embedding's error against fp32 on the example photos, and the CPU's
flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import machine, time_it  # noqa: E402


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


def main() -> None:
    from sss_rt import Extractor
    from sss_rt.backends import create_backend
    from sss_rt.extractor import default_model_path, examples_dir
    from sss_rt.io.images import load_image

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.size
    photos = sorted(examples_dir().glob("*.jpg"))
    image = cv2.resize(load_image(photos[0]), (n, n), interpolation=cv2.INTER_AREA)
    model = default_model_path()
    macs = conv_macs(model, n, n)
    result: dict = {"machine": machine(), "size": [n, n], "network_gmac": macs / 1e9, "cases": {}}
    for name, opts in (
        ("fp32 split (default)", {"precision": "fp32"}),
        ("int8 split", {"precision": "int8"}),
        ("fp32 whole graph", {"precision": "fp32", "execution": "whole"}),
        ("int8 whole graph", {"precision": "int8", "execution": "whole"}),
    ):
        be = create_backend("onnxruntime", model, device="cpu", threads=2, **opts)
        stats = time_it(lambda be=be: be.features(image, whole=False).materialize(), args.runs)
        stats["gmac_per_s"] = macs / 1e9 / stats["median_s"]
        result["cases"][name] = stats
        be.close()
    base = result["cases"]["fp32 split (default)"]["median_s"]
    for stats in result["cases"].values():
        stats["speedup_vs_default"] = base / stats["median_s"]
    ends = {}
    for precision in ("fp32", "int8"):
        with Extractor(device="cpu", threads=2, precision=precision) as ex:
            ends[precision] = time_it(lambda ex=ex: ex.extract(image), args.runs)
    ends["int8_speedup"] = ends["fp32"]["median_s"] / ends["int8"]["median_s"]
    result["extract_1mp"] = ends
    errors = []
    with Extractor(device="cpu") as fp32, Extractor(device="cpu", precision="int8") as int8:
        for p in photos:
            photo = cv2.resize(load_image(p), (640, 480), interpolation=cv2.INTER_AREA)
            d = np.abs(int8.extract(photo).embedding - fp32.extract(photo).embedding)
            errors.append({
                "photo": p.name, "mean": float(d.mean()), "p99": float(np.percentile(d, 99)),
                "max": float(d.max()),
            })  # fmt: skip
    result["int8_vs_fp32_embedding_640x480"] = errors
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "precision.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    lines = [
        "# Network precision on the CPU",
        "",
        f"`python benchmarks/precision.py --size {n} --runs {args.runs}`, 2 threads. CPU: "
        f"{m['cpu']}, {m['cores']} cores; flags: {' '.join(m['cpu_flags'])}.",
        "",
        f"Network at {n}×{n}: {macs / 1e9:.1f} GMAC of convolutions, counted on the whole graph "
        "(from its inferred shapes); the split path computes the same features with fewer (the "
        "head's projections run before upsampling), so its GMAC/s is an effective rate.",
        "",
        "| case | network median | vs default | GMAC/s |",
        "| --- | --- | --- | --- |",
    ]
    for name, s in result["cases"].items():
        lines.append(
            f"| {name} | {s['median_s']:.2f} s | {s['speedup_vs_default']:.2f}× | "
            f"{s['gmac_per_s']:.0f} |"
        )
    lines += [
        "",
        f"`Extractor.extract` at {n}×{n} (the `sss-rt extract` path): fp32 "
        f"{ends['fp32']['median_s']:.2f} s, int8 {ends['int8']['median_s']:.2f} s "
        f"({ends['int8_speedup']:.2f}×).",
        "",
        "int8 vs fp32 embedding (exact post-processing, 640×480):",
        "",
        "| photo | mean abs | p99 | max |",
        "| --- | --- | --- | --- |",
        *[f"| {e['photo']} | {e['mean']:.4f} | {e['p99']:.4f} | {e['max']:.3f} |" for e in errors],
    ]
    (HERE / "RESULTS-precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
