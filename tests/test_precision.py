"""int8 precision: quantization, its accuracy gates against fp32, and how it is chosen.

Gates (the four example photos, 480×360, the exact post-processing): the int8 embedding differs
from the fp32 one by mean abs ≤ 0.003 and p99 ≤ 0.02 (quantizing the first conv and the input
tap too fails them: rocket.jpg's p99 0.028); held-out pair AUC within 0.005 of fp32.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sss_rt.export.quantize import calibration_path, quantize

from sss_rt import Extractor, native
from sss_rt.errors import BackendUnavailableError
from sss_rt.extractor import default_model_path, examples_dir
from sss_rt.io.images import load_image


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    record = quantize(default_model_path(), out)
    assert record["calibration_images"] == 12
    return out


def _photos():
    return [
        cv2.resize(load_image(p), (480, 360), interpolation=cv2.INTER_AREA)
        for p in sorted(examples_dir().glob("*.jpg"))
    ]


HEADS = [None, *(v for v in native.head_variants() if v == "avx512-vnni-int8")]


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h or "default-head")
def test_int8_embeddings_within_the_gates(int8_model, head, monkeypatch):
    """With the head the CPU picks for int8 and, where VNNI runs, the int8 head kernel (the
    one CPUs without AMX pick)."""
    if head:
        monkeypatch.setenv("SSS_RT_HEAD_VARIANT", head)
    with Extractor(device="cpu") as fp32, Extractor(int8_model, precision="int8") as int8:
        assert int8.backend.splits  # the quantized graph still splits into trunk and head
        if head:
            assert int8.backend.describe()["head"] == head
        for photo in _photos():
            d = np.abs(int8.extract(photo).embedding - fp32.extract(photo).embedding)
            assert d.mean() <= 0.003, d.mean()
            assert np.percentile(d, 99) <= 0.02, np.percentile(d, 99)
            assert d.max() > 0  # int8 really ran


def test_calibration_set_is_kept(int8_model):
    with np.load(calibration_path(int8_model)) as z:
        images = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
    assert len(images) == 12
    assert all(im.dtype == np.uint8 and im.shape == (288, 384, 3) for im in images)


def test_int8_on_the_bundled_model_is_quantized_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("SSS_RT_CACHE", str(tmp_path))
    with Extractor(precision="int8") as ex:
        ex.extract(_photos()[0][:64, :80])
    made = list((tmp_path / "quantized").glob("*.int8.onnx"))
    assert len(made) == 1
    stamp = made[0].stat().st_mtime_ns
    with Extractor(precision="int8"):
        pass
    assert made[0].stat().st_mtime_ns == stamp  # reused, not re-made


def test_precisions_other_backends_cannot_run_are_refused():
    pytest.importorskip("torch")
    with pytest.raises(BackendUnavailableError, match="onnxruntime"):
        Extractor(backend="torch", precision="int8")
    with pytest.raises(ValueError, match="precision"):
        Extractor(precision="int4")


def test_cli_quantize_and_extract_int8(int8_model, tmp_path, capsys):
    from sss_rt.cli import main

    out = tmp_path / "q.onnx"
    with pytest.raises(SystemExit) as done:
        main(["quantize", str(default_model_path()), "-o", str(out)])
    assert done.value.code in (0, None)
    assert out.is_file() and calibration_path(out).is_file()
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), _photos()[0][:48, :64])
    with pytest.raises(SystemExit) as done:
        main(
            [
                "extract",
                str(photo),
                "-o",
                str(tmp_path / "o"),
                "-m",
                str(out),
                "--precision",
                "int8",
                "-q",
            ]
        )
    assert done.value.code in (0, None)
    assert (tmp_path / "o" / "p.embedding.png").is_file()


def test_cpu_units_are_read_and_can_be_simulated(monkeypatch):
    from sss_rt.precision import cpu_units, int8_unit

    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "sse2 avx2")
    assert int8_unit().startswith("no int8") and not cpu_units()["avx512_vnni"]
    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "avx2 avx512f avx512_vnni")
    assert int8_unit() == "AVX-512 VNNI"
    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "avx512_vnni amx_tile amx_int8 amx_bf16")
    assert int8_unit() == "AMX-INT8" and cpu_units()["amx_bf16"]


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h or "default-head")
def test_int8_held_out_pair_auc_within_0_005_of_fp32(int8_model, head, monkeypatch):
    """The same held-out scenes (the seed `sss-rt eval` uses) scored with both precisions."""
    if head:
        monkeypatch.setenv("SSS_RT_HEAD_VARIANT", head)
    from sss_rt.synthetic import HELD_OUT_SEED, SyntheticScenes
    from sss_rt.training.evaluate import evaluate

    scenes = SyntheticScenes((160, 160), seed=HELD_OUT_SEED)
    with Extractor(device="cpu") as fp32, Extractor(int8_model, precision="int8") as int8:
        a = evaluate(fp32, scenes, 12, seed=0).pair_auc
        b = evaluate(int8, scenes, 12, seed=0).pair_auc
    assert a > 0.85  # the model separates the scenes at all
    assert abs(a - b) <= 0.005, (a, b)


def test_int8_of_a_file_that_is_not_a_model_is_a_model_error(tmp_path):
    from sss_rt.errors import ModelError

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        Extractor(bad, precision="int8")
