"""Every measurement and gate of the GPU check (``benchmarks/gpu_check.sh``), and its rehearsal.

``check`` runs, on each usable CUDA runtime (CuPy, pycuda):

- parity of the CUDA post-processing with the CPU exact mode (fp32 and fp16 inputs, whole image
  and bands; max |Δ| of the [0, 1] embedding ≤ ``PARITY_TOL``);
- the kernels' time at 256×320 and 768×1024 × 128 channels against the PyTorch-ops peer
  (``peer_torch_postprocess.py``, same rules) and the CPU exact mode (target ≥ ``SPEED_TARGET``×
  the peer at 768×1024);
- end to end at 768×1024: the bundled model on the PyTorch CUDA backend + the CUDA
  post-processing vs the CPU pipeline, in fp32 (TF32 off: gated at ``E2E_TOL``) and tf32 (its
  error reported);
- TensorRT where installed; where not, the report says its gate did not run.

``--rehearse`` runs the same code here without a GPU: both runtimes over the test suite's CPU
stand-ins (tests/cuda_emulator.py), the network on the CPU, small sizes; the report is marked as
a rehearsal and holds no GPU figure. ``parity`` is the part compute-sanitizer runs.

Imports nothing a minimal GPU image may lack beyond NumPy, PyTorch, a CUDA runtime, onnx and
onnxruntime (no OpenCV, SciPy, scikit-image or OpenVINO: the rehearsal blocks them).

    python benchmarks/gpu_check.py check --out DIR [--rehearse] [--runs N]
    python benchmarks/gpu_check.py parity [--rehearse] [--runtime cupy] [--sizes 7x300 64x96]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sss_rt.benchmark import time_it

HERE = Path(__file__).resolve().parent
PARITY_TOL = 2e-4  #: embedding max |Δ| vs the CPU exact mode on the same input values
E2E_TOL = 2e-3  #: end to end (fp32, TF32 off) vs the CPU pipeline
SPEED_TARGET = 20.0  #: the kernels vs the PyTorch-ops peer at 768×1024×128
PARITY_SIZES = {"gpu": [(7, 300), (97, 531), (192, 256)], "rehearsal": [(7, 300), (33, 70)]}
SPEED_SIZES = {"gpu": [(256, 320), (768, 1024)], "rehearsal": [(24, 40)]}
E2E_SIZE = {"gpu": (768, 1024), "rehearsal": (48, 64)}


def test_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like RGB image (smooth regions, edges, noise), NumPy only."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / max(w, 1), yy / max(h, 1), (xx + yy) / max(h + w, 1)], -1) * 200
    for _ in range(6):
        y0, x0 = rng.integers(0, max(h - 1, 1)), rng.integers(0, max(w - 1, 1))
        img[y0 : y0 + h // 3 + 1, x0 : x0 + w // 3 + 1] = rng.integers(0, 256, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def runtimes(rehearse: bool, only: str | None = None) -> dict[str, Any]:
    """name → a usable runtime of GPU 0, or the reason it is not usable (a string)."""
    if rehearse:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from cuda_emulator import Emulator

        emu = Emulator()
        found: dict[str, Any] = {n: emu.runtime(n) for n in ("cupy", "pycuda")}
    else:
        from sss_rt.cuda import RUNTIMES, cuda_runtime

        found = {}
        for name in RUNTIMES:
            if importlib.util.find_spec(RUNTIMES[name]) is None:
                found[name] = "not installed"
                continue
            try:
                found[name] = cuda_runtime(0, name)
            except Exception as exc:
                found[name] = f"unusable: {exc}"
    return {k: v for k, v in found.items() if only in (None, k)}


def parity(rt: Any, sizes: list[tuple[int, int]], channels: int = 64) -> dict[str, Any]:
    """The CUDA post-processing on ``rt`` vs the CPU exact mode, fp32 and fp16 input values
    (device arrays), whole image and bands."""
    from sss_rt.postprocess import postprocess
    from sss_rt.postprocess.cuda import CudaPostprocessor

    cases = []
    for h, w in sizes:
        rng = np.random.default_rng(h * w)
        image = test_image(h, w, seed=h)
        base = rng.normal(size=(channels, h, w)).astype(np.float32)
        for name, dtype in (("fp32", np.float32), ("fp16", np.float16)):
            feats = base.astype(dtype)
            ref, _ = postprocess(feats.astype(np.float32), image)
            for band_rows in (None, max(1, h // 3)):
                pp = CudaPostprocessor(runtime=rt, band_rows=band_rows)
                with rt.activate():
                    on_device = rt.upload(feats, rt.stream())
                got = pp.run(on_device, image)[0]
                err = float(np.abs(got - ref).max())
                cases.append({
                    "size": [h, w], "input": name, "band_rows": band_rows,
                    "max_abs_vs_cpu": err, "passed": err <= PARITY_TOL,
                })  # fmt: skip
    return {"cases": cases, "passed": all(c["passed"] for c in cases)}


def speed(rt: Any, sizes: list[tuple[int, int]], runs: int, torch_device: str) -> list[dict]:
    """Kernel time (fp32, fp16 device input) vs the PyTorch-ops peer and the CPU exact mode."""
    import torch

    from sss_rt.postprocess import postprocess
    from sss_rt.postprocess.cuda import CudaPostprocessor

    sys.path.insert(0, str(HERE))
    from peer_torch_postprocess import postprocess as torch_pp

    pp = CudaPostprocessor(runtime=rt)
    out = []
    for h, w in sizes:
        image = test_image(h, w, seed=1)
        feats = np.random.default_rng(h).normal(size=(128, h, w)).astype(np.float32)
        t0 = time.perf_counter()
        ref, _ = postprocess(feats, image)
        entry: dict[str, Any] = {"size": [h, w], "channels": 128}
        entry["cpu_exact_s"] = time.perf_counter() - t0
        for name, dtype in (("fp32", np.float32), ("fp16", np.float16)):
            values = feats.astype(dtype)
            want = ref if dtype == np.float32 else postprocess(values.astype(np.float32), image)[0]
            with rt.activate():
                dev = rt.upload(values, rt.stream())
            got = pp.run(dev, image)[0]
            err = float(np.abs(got - want).max())
            entry[name] = {
                "max_abs_vs_cpu": err,
                "passed": err <= PARITY_TOL,
                **time_it(lambda dev=dev, image=image: pp.run(dev, image), runs),
            }
        tensor = torch.from_numpy(feats).to(torch_device)

        def peer(tensor: Any = tensor, image: np.ndarray = image) -> None:
            torch_pp(tensor, image)
            if torch_device.startswith("cuda"):
                torch.cuda.synchronize()

        entry["torch_ops"] = {"device": torch_device, **time_it(peer, runs)}
        entry["torch_ops_over_kernels"] = entry["torch_ops"]["median_s"] / entry["fp32"]["median_s"]
        out.append(entry)
    return out


def end_to_end(size: tuple[int, int], runs: int, rehearse: bool, rt: Any) -> dict[str, Any]:
    """The bundled model through the torch backend + CUDA post-processing vs the CPU pipeline
    (ONNX Runtime + CPU exact mode), in fp32 (TF32 off) and, on a GPU, tf32."""
    from sss_rt.extractor import Extractor
    from sss_rt.postprocess import Postprocessor

    photo = test_image(*size, seed=3)
    with Extractor(backend="onnxruntime", device="cpu") as cpu:
        t0 = time.perf_counter()
        want = cpu.extract(photo).embedding
        cpu_s = time.perf_counter() - t0
    result: dict[str, Any] = {"size": list(size), "cpu_pipeline_s": cpu_s}
    for precision in ("fp32", "tf32"):
        if rehearse and precision == "tf32":
            result[precision] = {"ran": False, "why": "tf32 exists on a GPU only"}
            continue
        device = "cpu" if rehearse else "cuda"
        with Extractor(backend="torch", device=device, precision=precision) as ex:
            if rehearse:  # the network on the CPU, the post-processing on the stand-in
                ex.postprocessor = Postprocessor(ex.config, "cuda", runtime=rt)
            if ex.postprocessor.device != "cuda":
                raise RuntimeError(f"no CUDA post-processing: {ex.postprocessor.reason}")
            runtime = ex.postprocessor.gpu.runtime.name
            got = ex.extract(photo).embedding
            err = float(np.abs(got - want).max())
            entry = {
                "runtime": runtime,
                "max_abs_vs_cpu_pipeline": err,
                "mean_abs_vs_cpu_pipeline": float(np.abs(got - want).mean()),
                **time_it(lambda ex=ex: ex.extract(photo), runs),
            }
            if precision == "fp32":
                entry["passed"] = err <= E2E_TOL
            result[precision] = entry
    return result


def tensorrt(size: tuple[int, int], runs: int) -> dict[str, Any]:
    if importlib.util.find_spec("tensorrt") is None:
        return {"ran": False, "why": "TensorRT is not installed on this machine"}
    from sss_rt.extractor import Extractor, default_model_path

    photo = test_image(*size, seed=3)
    t0 = time.perf_counter()
    with Extractor(default_model_path(), backend="tensorrt", device="cuda") as trt_ex:
        build_s = time.perf_counter() - t0
        with Extractor(backend="torch", device="cuda") as ref_ex:
            want = ref_ex.extract(photo).embedding
        err = float(np.abs(trt_ex.extract(photo).embedding - want).max())
        return {
            "ran": True,
            "build_or_load_s": build_s,
            "max_abs_vs_torch_cuda": err,
            "passed": err <= 0.02,  # fp16 engines
            **time_it(lambda: trt_ex.extract(photo), runs),
        }


def machine(rts: dict[str, Any]) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    for module in ("numpy", "torch", "cupy", "pycuda", "onnxruntime"):
        if importlib.util.find_spec(module) is not None:
            mod = __import__(module)
            info[module] = getattr(mod, "__version__", getattr(mod, "VERSION_TEXT", "?"))
    usable = [rt for rt in rts.values() if not isinstance(rt, str)]
    info["gpu"] = usable[0].properties() if usable else None
    return info


def check(rehearse: bool, runs: int) -> dict[str, Any]:
    import torch

    kind = "rehearsal" if rehearse else "gpu"
    rts = runtimes(rehearse)
    usable = {k: v for k, v in rts.items() if not isinstance(v, str)}
    result: dict[str, Any] = {
        "rehearsal": rehearse,
        "machine": machine(rts),
        "runtimes": {k: (v if isinstance(v, str) else v.describe()) for k, v in rts.items()},
    }
    if not usable:
        result["passed"] = False
        result["gates_not_run"] = ["everything: no usable CUDA runtime"]
        return result
    torch_device = "cuda" if (not rehearse and torch.cuda.is_available()) else "cpu"
    steps: dict[str, float] = {}
    result["parity"], result["speed"] = {}, {}
    for name, rt in usable.items():
        t0 = time.perf_counter()
        result["parity"][name] = parity(rt, PARITY_SIZES[kind])
        result["speed"][name] = speed(rt, SPEED_SIZES[kind], runs, torch_device)
        steps[f"kernels on {name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = next(iter(usable.values()))
    result["end_to_end"] = end_to_end(E2E_SIZE[kind], runs, rehearse, first)
    steps["end to end"] = time.perf_counter() - t0
    result["tensorrt"] = tensorrt(E2E_SIZE[kind], runs) if not rehearse else {
        "ran": False, "why": "rehearsal: no GPU"}  # fmt: skip
    result["seconds"] = steps
    gates = [p["passed"] for p in result["parity"].values()]
    gates += [e[n]["passed"] for s in result["speed"].values() for e in s for n in ("fp32", "fp16")]
    gates.append(result["end_to_end"]["fp32"]["passed"])
    if result["tensorrt"].get("ran"):
        gates.append(result["tensorrt"]["passed"])
    result["gates_not_run"] = [
        f"{name} runtime: {why}" for name, why in rts.items() if isinstance(why, str)
    ]
    if not result["tensorrt"].get("ran"):
        result["gates_not_run"].append(f"tensorrt: {result['tensorrt']['why']}")
    big = [e for s in result["speed"].values() for e in s if e["size"] == [768, 1024]]
    result["speed_target"] = {
        "target": SPEED_TARGET,
        "met": bool(big) and all(e["torch_ops_over_kernels"] >= SPEED_TARGET for e in big),
        "measured_at_768x1024": bool(big),
    }
    result["passed"] = all(gates)
    return result


def report(result: dict[str, Any]) -> str:
    """RESULTS-gpu.md."""
    m = result["machine"]
    gpu = m.get("gpu") or {}
    lines = ["# GPU check", ""]
    if result["rehearsal"]:
        lines += [
            "**REHEARSAL** — `gpu_check.sh --rehearse` on a machine without a GPU: both CUDA "
            "runtimes over the CPU stand-ins, the network on the CPU, small sizes. No figure "
            "here is a GPU figure.",
            "",
        ]
    lines += [
        f"GPU: {gpu.get('gpu_name')} (sm_{gpu.get('compute_capability')}, "
        f"{gpu.get('sm_count')} SMs, {gpu.get('gpu_memory_mb')} MB); CPU: {m['cpu']} "
        f"({m['cores']} cores); Python {m['python']}, torch {m.get('torch')}, "
        f"CuPy {m.get('cupy')}, pycuda {m.get('pycuda')}.",
        "",
        "Runtimes: " + "; ".join(f"{k}: {v}" for k, v in result["runtimes"].items()) + ".",
        "",
    ]
    if "speed" in result:
        lines += [
            "| runtime | size | fp32 kernels | fp16 kernels | PyTorch ops | ops / kernels | "
            "CPU exact | fp32 / fp16 max abs vs CPU |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, entries in result["speed"].items():
            for e in entries:
                h, w = e["size"]
                lines.append(
                    f"| {name} | {h}×{w}×128 | {e['fp32']['median_s'] * 1e3:.2f} ms | "
                    f"{e['fp16']['median_s'] * 1e3:.2f} ms | "
                    f"{e['torch_ops']['median_s'] * 1e3:.2f} ms ({e['torch_ops']['device']}) | "
                    f"{e['torch_ops_over_kernels']:.1f}× | {e['cpu_exact_s']:.2f} s | "
                    f"{e['fp32']['max_abs_vs_cpu']:.1e} / {e['fp16']['max_abs_vs_cpu']:.1e} |"
                )
        t = result["speed_target"]
        lines += ["", f"Speed target (≥ {t['target']:.0f}× the PyTorch-ops peer at 768×1024×128): "
                  + ("met" if t["met"] else "not met" if t["measured_at_768x1024"]
                     else "not measured at that size") + "."]  # fmt: skip
        for name, p in result["parity"].items():
            lines += [
                "",
                f"Parity on {name} (whole image and bands, max abs vs the CPU exact mode, gate "
                f"{PARITY_TOL:g}): "
                + ", ".join(
                    f"{c['size'][0]}×{c['size'][1]} {c['input']} bands={c['band_rows']}: "
                    f"{c['max_abs_vs_cpu']:.1e}"
                    for c in p["cases"]
                ),
            ]
        e2e = result["end_to_end"]
        h, w = e2e["size"]
        lines += ["", f"End to end, {h}×{w}, torch backend + CUDA post-processing vs the CPU "
                  f"pipeline ({e2e['cpu_pipeline_s']:.2f} s):"]  # fmt: skip
        for precision in ("fp32", "tf32"):
            e = e2e[precision]
            if not e.get("max_abs_vs_cpu_pipeline") and e.get("ran") is False:
                lines.append(f"- {precision}: did not run ({e['why']})")
                continue
            gate = f" (gate {E2E_TOL:g})" if precision == "fp32" else " (reported, not gated)"
            lines.append(
                f"- {precision} on {e['runtime']}: {e['median_s'] * 1e3:.1f} ms median; max "
                f"{e['max_abs_vs_cpu_pipeline']:.1e}, mean {e['mean_abs_vs_cpu_pipeline']:.1e}"
                + gate
            )
        trt = result["tensorrt"]
        lines += [
            "",
            "TensorRT: " + (json.dumps(trt) if trt.get("ran") else f"not run — {trt['why']}"),
        ]
    lines += ["", "Gates not run: " + ("; ".join(result["gates_not_run"]) or "none") + ".", ""]
    lines.append(f"All gates that ran passed: {result['passed']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the GPU check's measurements and gates")
    ap.add_argument("what", choices=["check", "parity"])
    ap.add_argument("--rehearse", action="store_true")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/sss-gpu-check")))
    ap.add_argument("--runtime", help="parity: only this runtime (cupy, pycuda)")
    ap.add_argument("--sizes", nargs="*", help="parity: HxW sizes")
    args = ap.parse_args(argv)
    if args.what == "parity":
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes or []] or None
        rts = runtimes(args.rehearse, args.runtime)
        failed = False
        for name, rt in rts.items():
            if isinstance(rt, str):
                print(f"{name}: {rt}")
                failed |= args.runtime is not None
                continue
            res = parity(rt, sizes or PARITY_SIZES["rehearsal" if args.rehearse else "gpu"])
            print(json.dumps({name: res}))
            failed |= not res["passed"]
        return 1 if failed else 0
    result = check(args.rehearse, args.runs if not args.rehearse else min(args.runs, 2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "RESULTS-gpu.md").write_text(report(result))
    print(report(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
