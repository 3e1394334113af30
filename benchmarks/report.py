"""Render benchmark results (JSON) as RESULTS.md plus PNG plots."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from sss_rt.benchmark import STAGES


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _plots(res: dict, out: Path, suffix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    rows = [p for p in res["pipeline"] if "error" not in p]
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.5))
        labels = [f"{p['backend']} {p['size'][0]}×{p['size'][1]}" for p in rows]
        left = [0.0] * len(rows)
        for stage in STAGES:
            vals = [p["stages"][stage]["median_s"] for p in rows]
            ax.barh(labels, vals, left=left, label=stage)
            left = [a + b for a, b in zip(left, vals, strict=True)]
        ax.set_xlabel("median seconds per image")
        ax.set_title("Latency per stage")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / f"stages{suffix}.png", dpi=110)
        plt.close(fig)
        names.append(f"stages{suffix}.png")
    pts = [p for p in res["scaling"]["points"] if "error" not in p]
    if len(pts) > 1:
        fig, ax1 = plt.subplots(figsize=(6.5, 4))
        ax2 = ax1.twinx()
        for tiling, name, colors in ((True, "tiled", ("tab:green", "tab:purple")),
                                     (False, "whole image", ("tab:blue", "tab:red"))):  # fmt: skip
            series = [p for p in pts if p.get("tiling", True) == tiling]
            if not series:
                continue
            mp = [p["megapixels"] for p in series]
            ax1.loglog(mp, [p["wall_s"] for p in series], "o-", color=colors[0],
                       label=f"time, {name}")  # fmt: skip
            ax2.loglog(mp, [p["peak_rss_mb"] for p in series], "s--", color=colors[1],
                       label=f"RSS, {name}")  # fmt: skip
        ax1.set_xlabel("megapixels")
        ax1.set_ylabel("seconds")
        ax2.set_ylabel("peak RSS (MB)")
        h1, l1 = ax1.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax1.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
        ax1.set_title("sss-rt extract (ONNX Runtime, CPU) vs image size")
        fig.tight_layout()
        fig.savefig(out / f"scaling{suffix}.png", dpi=110)
        plt.close(fig)
        names.append(f"scaling{suffix}.png")
    return names


def _rounds(rounds: list[dict]) -> list[str]:
    """The alternating rounds of peer, exact and fast: per-round ratios and their medians."""
    ok = [r for r in rounds if not any("error" in r[k] for k in ("peer", "exact", "fast"))]
    if not ok:
        return []
    lines = [
        "",
        f"The same comparison in {len(ok)} further round(s), peer and both modes alternating "
        "(3 runs each), because this machine's speed drifts within minutes:",
        "",
        "| round | peer | exact | peer / exact | fast | peer / fast |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    exact, fast = [], []
    for i, r in enumerate(ok, 1):
        p, e, f = r["peer"]["median_s"], r["exact"]["median_s"], r["fast"]["median_s"]
        exact.append(p / e)
        fast.append(p / f)
        lines.append(f"| {i} | {_ms(p)} | {_ms(e)} | {p / e:.2f}× | {_ms(f)} | {p / f:.1f}× |")
    lines += [
        "",
        f"**Median over the rounds: exact {statistics.median(exact):.2f}×, fast "
        f"{statistics.median(fast):.1f}×** (targets: 8× and 40×).",
    ]
    return lines


def write_report(res: dict, out: Path, md_path: Path) -> None:
    """Write ``md_path`` from ``res``; plots go to ``out`` and are linked relatively."""
    m = res["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Regenerate with `{res['command']}` (after `bash benchmarks/setup_peer_env.sh` for the "
        "OpenCV-contrib peer). Medians (p90 in brackets) after one warm-up; every ratio compares "
        "two measurements of this same run. Each measurement ran in its own process.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; python {m['python']}, numpy {m['numpy']}, "
        f"opencv {m['opencv']}, onnxruntime {m['onnxruntime']}, torch {m.get('torch', '-')}, "
        f"sss-rt {m['sss-rt']}. Model: `{Path(res['model']).name}`. "
        f"Run took {res['wall_time_s']:.0f} s."
        + (f" CPU flags: {' '.join(m['cpu_flags'])}." if m.get("cpu_flags") else ""),
        "",
        "## Network on CPU",
        "",
        "| backend | size | threads | graph optimization | median | p90 | peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    torch_row = next((n for n in res["network"] if n.get("backend") == "torch"), None)
    best_ort = None
    for n in res["network"]:
        if "error" in n:
            lines.append(f"| {n.get('backend')} | error: {n['error']} | | | | | |")
            continue
        lines.append(
            f"| {n['backend']} | {n['size'][0]}×{n['size'][1]} | {n['threads']} | "
            f"{n['graph_optimization'] if n['backend'] != 'torch' else '-'} | "
            f"{_ms(n['median_s'])} | {_ms(n['p90_s'])} | {n['peak_rss_mb']:.0f} MB |"
        )
        if n["backend"] == "onnxruntime" and n["threads"] == 2 and n["graph_optimization"] == "all":
            best_ort = n
    if torch_row and best_ort and "error" not in torch_row:
        ratio = torch_row["median_s"] / best_ort["median_s"]
        lines += [
            "",
            f"**Speed ratio ONNX Runtime (2 threads, all optimizations) / PyTorch eager "
            f"(2 threads), same weights and input: {ratio:.2f}×** (target ≥ 1.5×).",
        ]
        split = next((n for n in res["network"] if n.get("backend") == "onnxruntime-split"), None)
        if split and "error" not in split:
            lines += [
                "",
                "`onnxruntime-split` is how `sss-rt extract` runs the network by default: ONNX "
                "Runtime runs the trunk (everything below full resolution) and compiled code "
                "the full-resolution head (bilinear upsampling, fuse, ReLU, in one pass; the "
                "last conv as a BLAS GEMM), the ops that ONNX Runtime's profile below shows "
                "slow. Same weights, same 128-d features (tested within 1e-5 of their scale). "
                f"**Ratio to PyTorch eager: {torch_row['median_s'] / split['median_s']:.2f}×**.",
            ]
    forms = res.get("forms", {})
    if "training_form" in forms:
        tf, inf = forms["training_form"]["median_s"], forms["inference_form"]["median_s"]
        lines += [
            "",
            f"PyTorch eager, training form vs inference form (BN folded, fuse conv split "
            f"before upsampling), random weights of the same architecture: {_ms(tf)} vs "
            f"{_ms(inf)}, **{tf / inf:.2f}×**.",
        ]
    prof = res.get("op_profile", {})
    if prof and "error" not in prof:
        lines += [
            "",
            "ONNX Runtime time per op type: "
            + ", ".join(f"{op} {share * 100:.1f}%" for op, share in list(prof.items())[:6])
            + ".",
        ]
    lines += [
        "",
        "## Pipeline stages",
        "",
        "`Extractor.extract` on a JPEG file, as `sss-rt extract` runs it (split execution), "
        "with the stage times the pipeline records, then writing npz and png. `network` is the "
        "trunk plus the head's bands, computed as the post-processing reads them.",
        "",
        "| backend | size | " + " | ".join(STAGES) + " | total | peak RSS |",
        "| --- | --- | " + " | ".join("---" for _ in STAGES) + " | --- | --- |",
    ]
    for p in res["pipeline"]:
        if "error" in p:
            lines.append(f"| {p.get('backend')} | error: {p['error']} |")
            continue
        cells = " | ".join(_ms(p["stages"][s]["median_s"]) for s in STAGES)
        lines.append(
            f"| {p['backend']} | {p['size'][0]}×{p['size'][1]} | {cells} | "
            f"{_ms(p['total']['median_s'])} ({_ms(p['total']['p90_s'])}) | "
            f"{p['peak_rss_mb']:.0f} MB |"
        )
    pp = res["postprocess"]
    ours, peer = pp["ours"], pp["peer_ximgproc_numpy"]
    lines += [
        "",
        "## Post-processing vs peer",
        "",
        f"{ours['size'][0]}×{ours['size'][1]}×{ours['channels']} float32 features "
        "(guided filter r = 5, ε = 0.01, PCA to 3, normalization):",
        "",
        "| implementation | median | p90 | peak RSS | peer / this |",
        "| --- | --- | --- | --- | --- |",
    ]
    variants = [
        ("ours", "sss-rt exact, compiled kernel (default)"),
        ("ours_numpy", "sss-rt exact, NumPy/OpenCV engine (fallback)"),
        ("ours_fast", "sss-rt fast mode (approximate, see below)"),
        ("ours_matlab", "sss-rt MATLAB-compatible mode"),
    ]
    peer_ok = "error" not in peer
    for key, label in variants:
        row = pp.get(key)
        if not row:
            continue
        if "error" in row:
            lines.append(f"| {label} | error: {row['error']} | | | |")
            continue
        ratio = f"{peer['median_s'] / row['median_s']:.2f}×" if peer_ok else "–"
        lines.append(
            f"| {label} | {_ms(row['median_s'])} | {_ms(row['p90_s'])} | "
            f"{row['peak_rss_mb']:.0f} MB | {ratio} |"
        )
    if not peer_ok:
        lines.append(f"| OpenCV-contrib ximgproc + NumPy PCA | not run: {peer['error']} | | | |")
    else:
        lines.append(
            f"| peer: OpenCV-contrib ximgproc per channel + NumPy PCA (opencv {peer['opencv']}) "
            f"| {_ms(peer['median_s'])} | {_ms(peer['p90_s'])} | "
            f"{peer['peak_rss_mb']:.0f} MB | 1.00× |"
        )
        lines += [
            "",
            f"**Ratio peer / sss-rt exact: {peer['median_s'] / ours['median_s']:.2f}×** "
            "(> 1 means sss-rt is faster).",
        ]
        lines += _rounds(pp.get("rounds", []))
    fe = res.get("fast_error")
    if fe and "error" not in fe:
        lines += [
            "",
            f"Fast mode (subsample {fe['subsample']}) against exact mode, bundled model, "
            f"example photos at {fe['size'][0]}×{fe['size'][1]} (abs. error of the [0, 1] "
            "output):",
            "",
            "| image | max | mean | p99 | min. correlation per component |",
            "| --- | --- | --- | --- | --- |",
        ]
        for im in fe["images"]:
            lines.append(
                f"| {im['image']} | {im['max']:.4f} | {im['mean']:.4f} | {im['p99']:.4f} | "
                f"{im['min_correlation']:.5f} |"
            )
    sc = res["scaling"]
    lines += [
        "",
        "## Scaling (`sss-rt extract`, one PNG in, one PNG out)",
        "",
        "Wall time and peak RSS of the whole command, decode and encode included. Tiled (the "
        "default): the network's trunk runs once, its full-resolution head and the exact "
        "post-processing run in bands of rows (two passes). Whole image (`--no-tiling`): the "
        "complete network, then the post-processing, on the whole image.",
        "",
        "| size | megapixels | path | wall time | peak RSS |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in sc["points"]:
        path = "split" if p.get("tiling", True) else "whole graph"
        if "error" in p:
            lines.append(
                f"| {p.get('height')}×{p.get('width')} | | {path} | error: {p['error']} | |"
            )
        else:
            lines.append(
                f"| {p['size'][0]}×{p['size'][1]} | {p['megapixels']:.2f} | {path} | "
                f"{p['wall_s']:.1f} s | {p['peak_rss_mb']:.0f} MB |"
            )
    if sc.get("time_slope") is not None:
        lines += [
            "",
            f"Tiled, log-log slopes: time ∝ MP^{sc['time_slope']:.2f}, peak RSS ∝ "
            f"MP^{sc['rss_slope']:.2f}.",
        ]
    suffix = "-quick" if res.get("quick") else ""
    rel = os.path.relpath(out, md_path.parent)
    for name in _plots(res, out, suffix):
        lines += ["", f"![{name}]({rel}/{name})"]
    md_path.write_text("\n".join(lines) + "\n")
