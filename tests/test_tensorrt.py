"""TensorRT engine bookkeeping (profiles, sidecars, cache keys, mismatch messages) without a GPU.
Building and running engines needs TensorRT and a GPU (marked ``gpu``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from sss_rt.export.engine import (
    BuildSettings,
    Profile,
    cache_dir,
    cache_key,
    mismatch,
    sidecar,
)

from sss_rt.cli.params import parse_hw
from sss_rt.model_info import read_model_info

H100 = {
    "tensorrt": "10.9.0",
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": "90",
    "sm_count": 132,
    "gpu_memory_mb": 81000,
}
A100 = {**H100, "gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": "80", "sm_count": 108}


def test_parse_hw():
    assert parse_hw("768x1024") == (768, 1024)
    assert parse_hw(" 128 × 256 ") == (128, 256)
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_hw("768")


def test_profile_order_and_shape_check():
    p = Profile((128, 128), (768, 1024), (2048, 2048))
    assert p.shapes() == ((1, 128, 128, 3), (1, 768, 1024, 3), (1, 2048, 2048, 3))
    p.check((1, 500, 2048, 3))
    with pytest.raises(ValueError, match=r"outside the engine's profile .* 2048×2048"):
        p.check((1, 4096, 100, 3))
    with pytest.raises(ValueError, match="min ≤ opt ≤ max"):
        Profile((256, 256), (128, 128), (512, 512))
    with pytest.raises(ValueError, match="precision"):
        BuildSettings(precision="int8")


def test_sidecar_records_what_the_engine_depends_on(onnx_path):
    info = read_model_info(onnx_path)
    rec = sidecar("ab" * 32, BuildSettings(), H100, "0.1.0", info)
    for key in ("onnx_sha256", "profile", "precision", "tensorrt", "gpu_name",
                "compute_capability", "sm_count", "gpu_memory_mb", "sss_rt", "model"):  # fmt: skip
        assert rec[key] is not None, key
    assert rec["model"]["backbone"] == info.backbone
    assert rec["profile"]["max_hw"] == (2048, 2048)


def test_cache_key_changes_with_everything_that_invalidates_an_engine():
    base = cache_key("aa", BuildSettings(), H100)
    assert base == cache_key("aa", BuildSettings(), dict(H100))  # stable
    assert base != cache_key("bb", BuildSettings(), H100)  # another model
    assert base != cache_key("aa", BuildSettings(precision="fp32"), H100)
    assert base != cache_key("aa", BuildSettings(Profile(max_hw=(4096, 4096))), H100)
    assert base != cache_key("aa", BuildSettings(), A100)  # another GPU
    assert base != cache_key("aa", BuildSettings(), {**H100, "tensorrt": "10.10.0"})
    # what does not invalidate an engine does not change the key
    assert base == cache_key("aa", BuildSettings(workspace_mb=1024), {**H100, "sm_count": 1})


def test_mismatch_names_built_for_and_running_on():
    assert mismatch(H100, dict(H100)) is None
    msg = mismatch(H100, A100)
    assert msg == (
        "engine built for NVIDIA H100 80GB HBM3 (sm_90), TensorRT 10.9.0, running on "
        "NVIDIA A100-SXM4-80GB (sm_80), TensorRT 10.9.0"
    )
    assert "TensorRT 10.10.0" in mismatch(H100, {**H100, "tensorrt": "10.10.0"})


def test_cache_dir_is_per_user_and_overridable(monkeypatch, tmp_path):
    monkeypatch.setenv("SSS_RT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SSS_RT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "sss-rt" / "engines"


@pytest.mark.gpu
@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None,
    reason="needs TensorRT, pycuda and a GPU",
)
def test_engine_matches_onnxruntime(tmp_path, onnx_path, monkeypatch):
    from sss_rt.backends import create_backend

    monkeypatch.setenv("SSS_RT_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1, 160, 224, 3), dtype=np.uint8)
    ref = create_backend("onnxruntime", onnx_path, device="cpu").run(images)
    trt = create_backend("tensorrt", onnx_path)
    got = trt.run(images)
    assert np.abs(got - ref).max() <= 2e-2 * np.abs(ref).max()  # fp16 engine
    assert list(tmp_path.glob("*.engine")) and list(tmp_path.glob("*.engine.json"))


def test_concurrent_cache_builds_of_one_key_build_once(monkeypatch, tmp_path, onnx_path):
    """Two processes (here threads) asking for one missing engine: one builds, the other
    waits on the key's lock and uses that engine; an engine without sidecar is rebuilt."""
    import threading
    import time

    from sss_rt.export import engine

    monkeypatch.setenv("SSS_RT_CACHE", str(tmp_path))
    builds = []

    def fake_build(onnx, engine_path, settings, log=print, device="cuda"):
        builds.append(engine_path)
        time.sleep(0.3)  # long enough for the other caller to arrive
        Path(engine_path).write_bytes(b"engine")
        engine.sidecar_path(engine_path).write_text("{}")

    monkeypatch.setattr(engine, "build", fake_build)
    machine = {"gpu_name": "X", "compute_capability": "9.0", "tensorrt": "10.0", "cuda": "13"}
    settings = engine.BuildSettings()
    paths = []
    threads = [
        threading.Thread(
            target=lambda: paths.append(engine.cached_engine(onnx_path, settings, machine))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and paths[0] == paths[1]
    engine.sidecar_path(paths[0]).unlink()  # a build killed between the two writes
    engine.cached_engine(onnx_path, settings, machine)
    assert len(builds) == 2
