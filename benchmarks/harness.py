"""Benchmark harness of ``benchmarks/run.py``: latency and peak memory of the pipeline's parts.

Each measurement runs in a fresh subprocess (``python benchmarks/harness.py KIND JSON``) so that
its peak RSS is its own. Times are medians and 90th percentiles over ``runs`` repetitions after
one warm-up. The pipeline stages are timed on the real ``Extractor.extract`` path.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sss_rt.benchmark import test_image, time_extraction, time_it


def save_json(name: str, record: Any, indent: int = 2, **dumps: Any) -> None:
    """A benchmark's record as benchmarks/results/NAME.json."""
    folder = Path(__file__).resolve().parent / "results"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record, indent=indent, **dumps))


def save_markdown(name: str, lines: list[str]) -> None:
    """A benchmark's report as benchmarks/RESULTS-NAME.md."""
    (Path(__file__).resolve().parent / f"RESULTS-{name}.md").write_text("\n".join(lines) + "\n")


def layer_ious(hard: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """IoU of a boolean H×W mask with each of K boolean layers (H×W×K) → (K,)."""
    inter = (hard & mask[..., None]).sum(axis=(0, 1))
    union = (hard | mask[..., None]).sum(axis=(0, 1))
    return inter / np.maximum(union, 1)


def machine() -> dict[str, Any]:
    """CPU, core count and library versions of this machine."""
    import onnxruntime

    cpu = generic = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == generic:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                wanted = ("avx2", "fma", "avx512", "amx", "vnni")
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(wanted))
    except OSError:
        pass
    versions = {
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    from sss_rt._version import __version__

    versions["sss-rt"] = __version__
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        **versions,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pipeline_stages(
    model: str, backend: str, height: int, width: int, runs: int, threads: int | None = None
) -> dict[str, Any]:
    """Time every stage of ``Extractor.extract`` on one JPEG file (the path ``sss-rt extract``
    takes) and the outputs' writing."""
    result = time_extraction(model, backend, height, width, runs, threads)
    return {**result, "peak_rss_mb": peak_rss_mb()}


def network_only(
    model: str,
    backend: str,
    height: int,
    width: int,
    runs: int,
    threads: int | None = None,
    graph_optimization: str = "all",
) -> dict[str, Any]:
    """Time the network alone on one image: ``onnxruntime-split`` / ``torch-split`` are how
    ``sss-rt extract`` runs it (the trunk, then every band of the head); ``onnxruntime`` and
    ``torch`` run the whole graph."""
    from sss_rt.backends import create_backend

    image = test_image(height, width)
    name, _, how = backend.partition("-")
    options: dict[str, Any] = {"execution": "split" if how == "split" else "whole"}
    if name == "onnxruntime":
        options["graph_optimization"] = graph_optimization
    be = create_backend(name, model, device="cpu", threads=threads, **options)
    result = time_it(lambda: be.features(image).rows(0, height), runs)
    be.close()
    return {
        "backend": backend,
        "size": [height, width],
        "threads": threads,
        "graph_optimization": graph_optimization,
        **result,
        "peak_rss_mb": peak_rss_mb(),
    }


def training_form_network(backbone: str, height: int, width: int, runs: int) -> dict[str, Any]:
    """Time the training form (eval mode, PyTorch eager) of the same architecture."""
    import torch
    from sss_rt.export.inference_form import InferenceNet

    from sss_rt.network.model import HypercolumnNet

    torch.manual_seed(0)
    net = HypercolumnNet(backbone).eval()
    inf = InferenceNet(net).eval()
    x = torch.from_numpy(test_image(height, width)[None])
    with torch.inference_mode():
        train_t = time_it(lambda: net(x), runs)
        inf_t = time_it(lambda: inf(x), runs)
    return {"size": [height, width], "training_form": train_t, "inference_form": inf_t}


def ort_op_profile(model: str, height: int, width: int) -> dict[str, float]:
    """Share of ONNX Runtime's node time per op type, from its profiler."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    batch = test_image(height, width)[None]
    sess.run(None, {"image": batch})
    sess.run(None, {"image": batch})
    path = sess.end_profiling()
    events = json.loads(Path(path).read_text())
    by_op: dict[str, float] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + ev.get("dur", 0) / 1e6
    total = sum(by_op.values()) or 1.0
    return {k: v / total for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}


def postprocess_only(
    height: int,
    width: int,
    channels: int,
    runs: int,
    mode: str = "exact",
    engine: str = "auto",
) -> dict[str, Any]:
    """Time the project's CPU post-processing on random features (as the peer script does)."""
    from sss_rt.postprocess import postprocess
    from sss_rt.postprocess.config import PostprocessConfig
    from sss_rt.postprocess.guide import use_native

    cfg = PostprocessConfig(mode=mode, engine=engine)
    rng = np.random.default_rng(0)
    image = test_image(height, width)
    feats = rng.normal(size=(channels, height, width)).astype(np.float32)
    result = time_it(lambda: postprocess(feats, image, cfg), runs)
    return {
        "size": [height, width],
        "channels": channels,
        "mode": mode,
        "engine": "native" if use_native(cfg) else "numpy",
        **result,
        "peak_rss_mb": peak_rss_mb(),
    }


def extract_large(
    height: int,
    width: int,
    model: str | None = None,
    tiling: bool = True,
    backend: str = "onnxruntime",
    mode: str = "exact",
) -> dict[str, Any]:
    """``sss-rt extract`` of one image file (split by default, else ``--no-tiling``) with a
    backend and a post-processing mode: wall time and peak RSS of the whole command."""
    from sss_rt.cli import cli

    work = Path(tempfile.mkdtemp(prefix="sss-bench-large-"))
    src = work / "large.png"
    cv2.imwrite(str(src), test_image(height, width)[..., ::-1])
    baseline = peak_rss_mb()
    args = [str(src), "-o", str(work / "out"), "-f", "png", "-q", "-b", backend]
    args += ["--postprocess", mode, "--large", "refuse"]
    if model:
        args += ["-m", model]
    if not tiling:
        args += ["--no-tiling", "--max-megapixels", str(height * width / 1e6 + 1)]
    t0 = time.perf_counter()
    try:
        cli.main(args=["extract", *args], prog_name="sss-rt", standalone_mode=False)
    finally:
        elapsed = time.perf_counter() - t0
    written = sorted(p.name for p in (work / "out").iterdir())
    return {
        "size": [height, width],
        "megapixels": height * width / 1e6,
        "tiling": tiling,
        "backend": backend,
        "mode": mode,
        "wall_s": elapsed,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": baseline,
        "outputs": written,
    }


#: GPU parity gates (embedding max abs vs the CPU exact mode on the same input values)
GPU_TOL = {"fp32": 2e-4, "fp16": 2e-4}


def gpu_parity(sizes: list[list[int]] | None = None) -> dict[str, Any]:
    """The CUDA post-processing vs the CPU exact mode (fp32 and fp16 input, whole image and
    bands); small enough to run under compute-sanitizer. ``passed``: every case within
    ``GPU_TOL``."""
    import pycuda.gpuarray as gpuarray

    from sss_rt.postprocess import postprocess
    from sss_rt.postprocess.cuda import CudaPostprocessor

    cases = []
    for h, w in sizes or [[7, 300], [97, 531], [192, 256]]:
        rng = np.random.default_rng(h * w)
        image = test_image(h, w)
        base = rng.normal(size=(64, h, w)).astype(np.float32)
        for name, dtype in (("fp32", np.float32), ("fp16", np.float16)):
            feats = base.astype(dtype)
            ref, _ = postprocess(feats.astype(np.float32), image)
            for band_rows in (None, max(1, h // 3)):
                got = CudaPostprocessor(band_rows=band_rows).run(gpuarray.to_gpu(feats), image)[0]
                err = float(np.abs(got - ref).max())
                cases.append({
                    "size": [h, w], "input": name, "band_rows": band_rows,
                    "max_abs_vs_cpu": err, "passed": err <= GPU_TOL[name],
                })  # fmt: skip
    return {"cases": cases, "passed": all(c["passed"] for c in cases)}


def gpu_check(sizes: list[list[int]] | None = None, runs: int = 10) -> dict[str, Any]:
    """Everything a GPU machine can check: the CUDA post-processing's parity and timings at
    several sizes against the CPU exact mode and the PyTorch-ops peer (768×1024×128 among
    them); end to end (PyTorch CUDA backend + CUDA post-processing) vs the CPU pipeline;
    TensorRT build/run/parity where TensorRT exists. ``passed``: every gate held."""
    import pycuda.gpuarray as gpuarray
    import torch

    from sss_rt import Extractor
    from sss_rt.postprocess import postprocess
    from sss_rt.postprocess.cuda import CudaPostprocessor

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peer_torch_postprocess import postprocess as torch_pp

    pp = CudaPostprocessor()
    out: dict[str, Any] = {"machine": machine(), "gpu": torch.cuda.get_device_name(0)}
    out["parity"] = gpu_parity()
    out["sizes"] = []
    for h, w in sizes or [[256, 320], [768, 1024], [1080, 1920]]:
        rng = np.random.default_rng(h)
        image = test_image(h, w)
        feats = rng.normal(size=(128, h, w)).astype(np.float32)
        ref, _ = postprocess(feats, image)
        entry: dict[str, Any] = {"size": [h, w], "channels": 128}
        for name, dtype in (("fp32", np.float32), ("fp16", np.float16)):
            dev = gpuarray.to_gpu(feats.astype(dtype))
            want = ref if dtype == np.float32 else postprocess(feats.astype(dtype), image)[0]
            got = pp.run(dev, image)[0]
            err = float(np.abs(got - want).max())
            entry[name] = {
                "max_abs_vs_cpu": err,
                "passed": err <= GPU_TOL[name],
                **time_it(lambda dev=dev, image=image: pp.run(dev, image), runs),
            }
        entry["cpu_exact"] = time_it(lambda f=feats, i=image: postprocess(f, i), 1, warmup=0)
        tf = torch.from_numpy(feats).cuda()

        def torch_run(tf: Any = tf, image: np.ndarray = image) -> None:
            torch_pp(tf, image)
            torch.cuda.synchronize()

        entry["torch_ops"] = time_it(torch_run, runs)
        entry["torch_ops_over_kernels"] = entry["torch_ops"]["median_s"] / entry["fp32"]["median_s"]
        out["sizes"].append(entry)

    # end to end: the bundled model through PyTorch on CUDA, the CUDA post-processing
    photo = test_image(768, 1024)
    with Extractor(backend="torch", device="cuda") as gpu, Extractor(device="cpu") as cpu:
        assert gpu.postprocessor.device == "cuda", gpu.postprocessor.reason
        got = gpu.extract(photo).embedding
        want = cpu.extract(photo).embedding
        err = float(np.abs(got - want).max())

        def e2e() -> None:
            gpu.extract(photo)

        out["end_to_end_768x1024"] = {
            "max_abs_vs_cpu_pipeline": err,
            "mean_abs_vs_cpu_pipeline": float(np.abs(got - want).mean()),
            "passed": err <= 2e-3,
            **time_it(e2e, runs),
            "cpu_pipeline": time_it(lambda: cpu.extract(photo), 1, warmup=0),
        }
    out["tensorrt"] = _tensorrt_check(photo, runs)
    gates = [out["parity"]["passed"], out["end_to_end_768x1024"]["passed"]]
    gates += [e[n]["passed"] for e in out["sizes"] for n in ("fp32", "fp16")]
    if "passed" in out["tensorrt"]:
        gates.append(out["tensorrt"]["passed"])
    out["passed"] = all(gates)
    return out


def _tensorrt_check(photo: np.ndarray, runs: int) -> dict[str, Any]:
    """TensorRT engine build, run and parity with the PyTorch CUDA path, where it exists."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return {"skipped": "TensorRT is not installed on this machine"}
    from sss_rt import Extractor
    from sss_rt.extractor import default_model_path

    t0 = time.perf_counter()
    with Extractor(default_model_path(), backend="tensorrt", device="cuda") as trt_ex:
        build_s = time.perf_counter() - t0
        with Extractor(backend="torch", device="cuda") as ref_ex:
            want = ref_ex.extract(photo).embedding
        got = trt_ex.extract(photo).embedding
        err = float(np.abs(got - want).max())
        return {
            "build_or_load_s": build_s,
            "max_abs_vs_torch_cuda": err,
            "passed": err <= 0.02,  # fp16 engines
            **time_it(lambda: trt_ex.extract(photo), runs),
        }


def gpu_report(result: dict[str, Any]) -> str:
    """benchmarks/RESULTS-gpu.md from a gpu_check result."""
    m = result["machine"]
    lines = [
        "# GPU check",
        "",
        "`bash benchmarks/gpu_check.sh` on a lent GPU machine. GPU: "
        + result["gpu"]
        + "; CPU: "
        + str(m.get("cpu"))
        + ".",
        "",
        "| size | fp32 kernels | fp16 kernels | PyTorch ops | ops / kernels | CPU exact |"
        " fp32 / fp16 max abs vs CPU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in result["sizes"]:
        h, w = e["size"]
        lines.append(
            f"| {h}×{w}×128 | {e['fp32']['median_s'] * 1e3:.2f} ms | "
            f"{e['fp16']['median_s'] * 1e3:.2f} ms | {e['torch_ops']['median_s'] * 1e3:.2f} ms | "
            f"{e['torch_ops_over_kernels']:.1f}× | {e['cpu_exact']['median_s']:.2f} s | "
            f"{e['fp32']['max_abs_vs_cpu']:.1e} / {e['fp16']['max_abs_vs_cpu']:.1e} |"
        )
    e2e = result["end_to_end_768x1024"]
    lines += [
        "",
        f"End to end, 768×1024, PyTorch CUDA backend + CUDA post-processing: "
        f"{e2e['median_s'] * 1e3:.1f} ms median (CPU pipeline {e2e['cpu_pipeline']['median_s']:.2f}"
        f" s); embedding vs the CPU pipeline max {e2e['max_abs_vs_cpu_pipeline']:.1e}, mean "
        f"{e2e['mean_abs_vs_cpu_pipeline']:.1e}.",
        "",
        "Parity cases (whole image and bands): "
        + ", ".join(
            f"{c['size'][0]}×{c['size'][1]} {c['input']} bands={c['band_rows']}: "
            f"{c['max_abs_vs_cpu']:.1e}"
            for c in result["parity"]["cases"]
        ),
        "",
        "TensorRT: " + json.dumps(result["tensorrt"]),
        "",
        f"All gates passed: {result['passed']}.",
    ]
    return "\n".join(lines) + "\n"


def fast_mode_error(model: str, height: int, width: int) -> dict[str, Any]:
    """Fast vs exact mode on the bundled example photos with ``model``'s real features."""
    from sss_rt.backends import create_backend
    from sss_rt.extractor import examples_dir
    from sss_rt.io.images import load_image
    from sss_rt.postprocess import postprocess
    from sss_rt.postprocess.config import PostprocessConfig

    be = create_backend("onnxruntime", model, device="cpu")

    def features(image: np.ndarray) -> np.ndarray:
        return be.features(image).rows(0, image.shape[0])

    per_image = []
    for path in sorted(examples_dir().glob("*.jpg")):
        image = cv2.resize(load_image(path), (width, height), interpolation=cv2.INTER_AREA)
        feats = features(image)
        exact, _ = postprocess(feats, image)
        fast, _ = postprocess(feats, image, PostprocessConfig(mode="fast"))
        err = np.abs(fast - exact)
        corr = [
            float(np.corrcoef(fast[..., k].ravel(), exact[..., k].ravel())[0, 1]) for k in (0, 1, 2)
        ]
        per_image.append(
            {
                "image": path.name,
                "max": float(err.max()),
                "mean": float(err.mean()),
                "p99": float(np.percentile(err, 99)),
                "min_correlation": min(corr),
            }
        )
    return {
        "size": [height, width],
        "subsample": PostprocessConfig().subsample,
        "images": per_image,
    }


def run_isolated(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), kind, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed",
            **kwargs,
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "pipeline": pipeline_stages,
    "network": network_only,
    "fast_error": fast_mode_error,
    "extract_large": extract_large,
    "gpu_check": gpu_check,
    "training_form": training_form_network,
    "profile": ort_op_profile,
    "postprocess": postprocess_only,
    "gpu_parity": gpu_parity,
}

if __name__ == "__main__":
    kind, args = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    result = KINDS[kind](**args)
    print(json.dumps(result))
    if kind == "gpu_check":  # the committed results, written by the run that measured them
        here = Path(__file__).resolve().parent
        (here / "results").mkdir(exist_ok=True)
        (here / "results" / "gpu.json").write_text(json.dumps(result, indent=2))
        (here / "RESULTS-gpu.md").write_text(gpu_report(result))
    if isinstance(result, dict) and result.get("passed") is False:
        sys.exit(f"{kind}: a gate failed (see the JSON above)")
