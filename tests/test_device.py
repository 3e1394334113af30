"""One device model, one support table, the CUDA runtime's choice, and the GPU set-up pieces
that run without a GPU (pycuda's build configuration, packaging, TF32 in the torch backend)."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path

import pytest

from sss_rt import cuda as cuda_runtimes
from sss_rt.backends import SUPPORT, check_support, create_backend
from sss_rt.device import Device
from sss_rt.errors import BackendUnavailableError
from sss_rt.extractor import default_model_path

ROOT = Path(__file__).resolve().parents[1]


# -- the device ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec,kind,index,text",
    [
        ("cpu", "cpu", None, "cpu"),
        ("auto", "auto", None, "auto"),
        ("cuda", "cuda", None, "cuda"),
        ("cuda:0", "cuda", 0, "cuda:0"),
        (" CUDA:3 ", "cuda", 3, "cuda:3"),
    ],
)
def test_device_is_parsed_once_into_a_value(spec, kind, index, text):
    d = Device.parse(spec)
    assert (d.kind, d.index, str(d)) == (kind, index, text)
    assert Device.parse(d) is d
    assert d.cuda_index == (index or 0)


@pytest.mark.parametrize("spec", ["gpu", "cpu:1", "cuda:x", "cuda:", "", "auto:0", "cuda:-1"])
def test_a_bad_device_is_one_clear_error(spec):
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        Device.parse(spec)


# -- what each backend supports --------------------------------------------------------------
def test_the_table_answers_every_backend_device_and_precision():
    """check_support agrees with the table for every combination, and a refusal names the
    backends that do run the precision there."""
    precisions = {p for s in SUPPORT.values() for ps in s.precisions.values() for p in ps}
    for name, s in SUPPORT.items():
        for kind in ("cpu", "cuda"):
            for precision in precisions:
                ok = precision in s.precisions.get(kind, ())
                if ok:
                    assert check_support(name, kind, precision) == Device(kind)
                    continue
                with pytest.raises(BackendUnavailableError) as err:
                    check_support(name, kind, precision)
                message = str(err.value)
                assert "\n" not in message and name in message
                for other, t in SUPPORT.items():
                    if precision in t.precisions.get(kind, ()):
                        assert other in message  # where it does run


def test_torch_bf16_points_to_the_backend_that_runs_it():
    """It once told bf16 users to use onnxruntime, which refuses bf16."""
    with pytest.raises(BackendUnavailableError) as err:
        check_support("torch", "cpu", "bf16")
    assert "openvino" in str(err.value) and "onnxruntime" not in str(err.value)
    with pytest.raises(BackendUnavailableError, match="openvino"):
        create_backend("onnxruntime", default_model_path(), device="cpu", precision="bf16")


def test_device_and_execution_refusals():
    with pytest.raises(BackendUnavailableError, match="openvino backend runs on cpu, not cuda:1"):
        check_support("openvino", "cuda:1", "fp32")
    with pytest.raises(BackendUnavailableError, match="tensorrt backend runs on cuda, not cpu"):
        check_support("tensorrt", "cpu", "fp32")
    with pytest.raises(BackendUnavailableError, match="whole execution, not split"):
        check_support("tensorrt", "cuda", "fp32", "split")
    with pytest.raises(ValueError, match="execution must be"):
        check_support("onnxruntime", "cpu", "fp32", "tiles")
    with pytest.raises(ValueError, match="unknown backend"):
        check_support("tflite", "cpu", "fp32")


def test_info_lists_the_table(capsys):
    from sss_rt.cli import main

    with pytest.raises(SystemExit):
        main(["info"])
    out = capsys.readouterr().out
    for name, s in SUPPORT.items():
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{name}:") and "—" in x)
        for kind, ps in s.precisions.items():
            assert f"{kind}: {', '.join(ps)}" in line


# -- the CUDA runtime's choice ---------------------------------------------------------------
def _installed(monkeypatch, present: set[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (object() if name in present else None)
            if name in cuda_runtimes.RUNTIMES
            else real(name, *a)
        ),
    )


def test_runtime_choice(monkeypatch):
    monkeypatch.delenv(cuda_runtimes.ENV, raising=False)
    _installed(monkeypatch, {"pycuda", "cupy"})
    assert cuda_runtimes.runtime_name() == "pycuda"
    _installed(monkeypatch, {"cupy"})
    assert cuda_runtimes.runtime_name() == "cupy"
    monkeypatch.setenv(cuda_runtimes.ENV, "cupy")
    _installed(monkeypatch, {"pycuda", "cupy"})
    assert cuda_runtimes.runtime_name() == "cupy"
    monkeypatch.setenv(cuda_runtimes.ENV, "opencl")
    with pytest.raises(BackendUnavailableError, match="SSS_RT_CUDA_RUNTIME='opencl'"):
        cuda_runtimes.runtime_name()
    monkeypatch.delenv(cuda_runtimes.ENV)
    _installed(monkeypatch, set())
    with pytest.raises(BackendUnavailableError, match=r"sss-rt\[cuda12\]"):
        cuda_runtimes.cuda_runtime(0)


def test_a_forced_runtime_that_is_missing_says_what_to_install(monkeypatch):
    monkeypatch.setenv(cuda_runtimes.ENV, "cupy")
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    with pytest.raises(BackendUnavailableError, match="needs CuPy"):
        cuda_runtimes.cuda_runtime(7)


def test_postprocessor_falls_back_to_the_cpu_with_the_reason(monkeypatch, caplog):
    from sss_rt.postprocess import Postprocessor
    from sss_rt.postprocess.config import PostprocessConfig

    monkeypatch.delenv(cuda_runtimes.ENV, raising=False)
    _installed(monkeypatch, set())
    pp = Postprocessor(PostprocessConfig(), "cuda:1")
    assert pp.device == "cpu" and "pycuda or CuPy" in pp.reason


# -- TF32 in the torch backend ---------------------------------------------------------------
def test_torch_fp32_runs_without_tf32_and_restores_the_flags():
    """PyTorch lets cuDNN use TF32 by default; the fp32 backend turns it off around its own
    work (the CPU pipeline's numbers) and leaves the process's setting as it found it."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from sss_rt.backends.torch import TorchBackend, tf32

    seen: list[tuple[bool, bool]] = []
    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (flags[0].allow_tf32, flags[1].allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    try:
        be = TorchBackend(default_model_path(), device="cpu", execution="whole")
        be.module.register_forward_pre_hook(
            lambda *_: seen.append((flags[0].allow_tf32, flags[1].allow_tf32))
        )
        be.features(np.zeros((40, 48, 3), np.uint8))
        assert seen == [(False, False)]
        assert flags[0].allow_tf32 is True  # restored
        with tf32(torch, True):
            assert flags[0].allow_tf32 and flags[1].allow_tf32
    finally:
        flags[0].allow_tf32, flags[1].allow_tf32 = before
    with pytest.raises(BackendUnavailableError, match="tf32"):
        TorchBackend(default_model_path(), device="cpu", precision="tf32")


# -- packaging ---------------------------------------------------------------------------------
def test_packaging_metadata():
    """onnxruntime-gpu is no extra (it and onnxruntime overwrite each other's files); a CuPy
    extra per CUDA major; a PEP 639 licence string needs setuptools ≥ 77 to build."""
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    assert not any("onnxruntime-gpu" in d for deps in extras.values() for d in deps)
    assert any(d.startswith("onnxruntime") for d in meta["project"]["dependencies"])
    assert any("cupy-cuda12x" in d for d in extras["cuda12"])
    assert any("cupy-cuda13x" in d for d in extras["cuda13"])
    if isinstance(meta["project"].get("license"), str):
        req = next(r for r in meta["build-system"]["requires"] if r.startswith("setuptools"))
        assert (
            req.replace(" ", "") in ("setuptools>=77",)
            or int(req.split(">=")[1].split(".")[0]) >= 77
        )
    assert "sss_rt.cuda" in meta["tool"]["setuptools"]["packages"]


def test_info_reports_both_onnxruntime_packages_as_a_conflict(monkeypatch):
    import importlib

    info = importlib.import_module("sss_rt.cli.info")

    real = info._version
    monkeypatch.setattr(
        info, "_version", lambda d: "1.20.0" if d in ("onnxruntime", "onnxruntime-gpu") else real(d)
    )
    parts = info.gpu_parts()
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in parts["onnxruntime packages"]


# -- pycuda's build configuration -----------------------------------------------------------------
def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def siteconf():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pycuda_siteconf

    yield pycuda_siteconf
    sys.path.remove(str(ROOT / "benchmarks"))


def test_pycuda_config_sees_through_an_nvcc_wrapper(tmp_path, siteconf):
    """The lent image's layout: /usr/local/bin/nvcc a wrapper script, the toolkit elsewhere,
    the driver's libcuda.so.1 without its unversioned link. The config names the real toolkit,
    turns cuRAND off and gives the linker a folder with libcuda.so."""
    root = tmp_path / "cuda-13.0"
    (root / "include").mkdir(parents=True)
    (root / "include" / "cuda.h").write_text("")
    (root / "lib64").mkdir()
    _executable(root / "bin" / "nvcc", f'#!/bin/sh\necho "#$ TOP={root}/bin/.." >&2\n')
    wrapper = _executable(tmp_path / "bin" / "nvcc", f'#!/bin/sh\nexec {root}/bin/nvcc "$@"\n')
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "libcuda.so.1").write_bytes(b"")
    env = {"PATH": f"{wrapper.parent}{os.pathsep}/usr/bin:/bin"}
    found = siteconf.cuda_root(env=env)
    assert found == root.resolve()
    assert siteconf.cuda_root(env=env, nvcc=str(wrapper)) == root.resolve()
    lib = siteconf.driver_lib_dir(found, tmp_path / "link", search=[driver])
    assert (lib / "libcuda.so").resolve() == (driver / "libcuda.so.1").resolve()
    conf = siteconf.config(found, lib)
    assert conf["CUDA_ROOT"] == str(root.resolve()) and conf["CUDA_ENABLE_CURAND"] is False
    assert conf["CUDA_INC_DIR"] == [str(root.resolve() / "include")]
    assert conf["CUDADRV_LIB_DIR"] == [str(lib)]
    assert set(conf) == set(siteconf.OPTIONS)
    names: dict = {}
    exec(siteconf.render(conf), names)  # what aksetup does with the file
    assert {k: names[k] for k in conf} == conf


def test_pycuda_config_refuses_without_a_toolkit_or_driver(tmp_path, siteconf):
    with pytest.raises(siteconf.NotFound, match=r"include/cuda\.h"):
        env = {"PATH": str(tmp_path), "CUDA_HOME": str(tmp_path)}
        siteconf.cuda_root(env=env, fallbacks=())
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "cuda.h").write_text("")
    with pytest.raises(siteconf.NotFound, match="libcuda"):
        siteconf.driver_lib_dir(tmp_path, tmp_path / "link", search=[])
    stubs = tmp_path / "lib64" / "stubs"
    stubs.mkdir(parents=True)
    (stubs / "libcuda.so").write_bytes(b"")
    assert siteconf.driver_lib_dir(tmp_path, tmp_path / "link", search=[]) == stubs


def test_every_backend_defaults_to_fp32():
    """One default across backends (OpenVINO's was bf16, which this CPU may not even run)."""
    import inspect

    from sss_rt.backends.onnxruntime import OnnxRuntimeBackend
    from sss_rt.backends.openvino import OpenVinoBackend
    from sss_rt.backends.tensorrt import TensorRTBackend
    from sss_rt.extractor import Extractor

    classes = [OnnxRuntimeBackend, OpenVinoBackend, TensorRTBackend, Extractor, create_backend]
    if importlib.util.find_spec("torch") is not None:
        from sss_rt.backends.torch import TorchBackend

        classes.append(TorchBackend)
    for cls in classes:
        assert inspect.signature(cls).parameters["precision"].default == "fp32", cls
