"""bf16 precision: the fused head kernels (bf16, and the int8 variant) against float64
oracles, the accuracy gates of the bf16 network against fp32, and how ``auto`` and the int8
precision choose their head.

Kernel oracle: the head's 512-channel layer from the NumPy fp32 path (``compiled=False``),
rounded to bf16 as the kernel rounds it (nearest even), times the bf16-rounded weights in
float64. The kernel differs from it only by fp32 accumulation order and by values whose fp32
rounding lands on the other side of a bf16 rounding boundary: measured max 4e-4 of the output
scale; the tolerance is 3e-3 of it, while the plain fp32 head is off the oracle by more. The
int8 kernel's oracle quantizes that layer to uint8 per pixel as the kernel does (see
``_oracle``, ``_matches``).

Gates (the four example photos, 480×360, the exact post-processing): bf16 embeddings differ
from fp32 by mean abs ≤ 0.003 and p99 ≤ 0.02; held-out pair AUC within 0.005 of fp32.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sss_rt import Extractor, native
from sss_rt.errors import BackendUnavailableError
from sss_rt.extractor import examples_dir
from sss_rt.head import HeadSource, HeadWeights
from sss_rt.io.images import load_image
from sss_rt.precision import head_variant, resolve_precision

VARIANTS = native.head_variants()


def _from_bf16(b: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) → float32."""
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


needs_bf16_kernel = pytest.mark.skipif(not VARIANTS, reason="no AMX-BF16 / AVX512-BF16 here")
needs_bf16_engine = pytest.mark.skipif(
    resolve_precision("auto") != "bf16", reason="this CPU has no bf16 unit"
)


def _random_head(rng, h, w, mid=64, cin=4, c_p1=24, out=40):
    weights = HeadWeights(
        fuse_input=rng.standard_normal((mid, cin)).astype(np.float32) * 0.5,
        fuse_pool1=rng.standard_normal((mid, c_p1)).astype(np.float32) * 0.2,
        fuse_bias=rng.standard_normal(mid).astype(np.float32) * 0.1,
        head=rng.standard_normal((out, mid)).astype(np.float32) * 0.2,
        head_bias=rng.standard_normal(out).astype(np.float32),
    )
    t_in = rng.random((cin, h, w), dtype=np.float32)
    t_p1 = rng.random((c_p1, -(-h // 4), -(-w // 4)), dtype=np.float32)
    deep = rng.standard_normal((mid, -(-h // 8), -(-w // 8))).astype(np.float32) * 0.3
    return weights, t_in, t_p1, deep


def _oracle(source: HeadSource, y0, y1, x0, x1, head, bias, variant="amx-bf16"):
    """float64 product of the bf16-rounded 512-channel layer and bf16-rounded weights; for the
    int8 variant, of the layer quantized to uint8 per pixel (scale: the pixel's max / 255,
    rounded to nearest even) and the int8 weights with their per-channel scales."""
    mid = source.w.head.shape[1]
    buf = np.empty(mid * (y1 - y0) * (x1 - x0), np.float32)
    hidden = source._hidden(y0, y1, x0, x1, buf).reshape(mid, -1)
    bias = np.asarray(bias, np.float64)[:, None]
    if variant == "avx512-vnni-int8":
        top = np.maximum(hidden.max(axis=0), np.float32(1e-30))
        q = np.minimum(np.rint(hidden * (np.float32(255) / top)), 255).astype(np.float64)
        packed = native.PackedHead.pack(head, np.asarray(bias[:, 0], np.float32))
        m = head.shape[0]
        w8 = packed.int8[:m].astype(np.float64) * packed.int8_scale[:m, None]
        out = (w8 @ q) * (top / np.float32(255)).astype(np.float64)[None, :] + bias
    else:
        h16 = _from_bf16(native.to_bf16(hidden)).astype(np.float64)
        w16 = _from_bf16(native.to_bf16(head)).astype(np.float64)
        out = w16 @ h16 + bias
    return out.reshape(-1, y1 - y0, x1 - x0)


def _matches(got, oracle, scale, variant) -> bool:
    """bf16: within 3e-3 of the scale everywhere. int8: 99% of the values within 1e-5 of it
    (only rounding order differs), the rest — a hidden value whose fp32 rounding lands across a
    uint8 step — within 1e-2."""
    d = np.abs(got - oracle)
    if variant != "avx512-vnni-int8":
        return bool(d.max() <= 3e-3 * scale)
    return bool(np.percentile(d, 99) <= 1e-5 * scale and d.max() <= 1e-2 * scale)


@needs_bf16_kernel
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(37, 53), (16, 32), (70, 129)])
def test_bf16_head_matches_the_float64_oracle(variant, size):
    rng = np.random.default_rng(sum(size))
    weights, t_in, t_p1, deep = _random_head(rng, *size)
    h, w = size
    ref_src = HeadSource(weights, t_in, t_p1, deep, compiled=False)
    src = HeadSource(weights, t_in, t_p1, deep, threads=2, variant=variant)
    oracle = _oracle(ref_src, 0, h, 0, w, weights.head, weights.head_bias, variant)
    scale = np.abs(oracle).mean()
    got = src.rows(0, h)
    assert got.shape == oracle.shape and got.dtype == np.float32
    assert _matches(got, oracle, scale, variant)
    fp32 = HeadSource(weights, t_in, t_p1, deep).rows(0, h)  # the rounding really happened
    assert not _matches(fp32, oracle, scale, variant)
    # any band and any region give the same values as the whole
    band = src.rows(5, h - 3)
    np.testing.assert_allclose(band, got[:, 5 : h - 3], rtol=0, atol=1e-5 * scale)
    region = src.region(2, h - 1, 3, w - 5)
    oracle_region = _oracle(ref_src, 2, h - 1, 3, w - 5, weights.head, weights.head_bias, variant)
    assert _matches(region, oracle_region, scale, variant)


@needs_bf16_kernel
@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_projected_rows_match_the_oracle(variant):
    """The PCA projection folded into the last conv: 3 output channels (padded to 32)."""
    rng = np.random.default_rng(7)
    weights, t_in, t_p1, deep = _random_head(rng, 41, 67)
    comps = rng.standard_normal((3, weights.head.shape[0]))
    shift = rng.standard_normal(weights.head.shape[0])
    src = HeadSource(weights, t_in, t_p1, deep, threads=2, variant=variant)
    got = src.projected_rows(4, 30, comps, shift)
    head = (comps @ weights.head.astype(np.float64)).astype(np.float32)
    bias = comps @ (weights.head_bias.astype(np.float64) - shift)
    ref_src = HeadSource(weights, t_in, t_p1, deep, compiled=False)
    oracle = _oracle(ref_src, 4, 30, 0, 67, head, bias.astype(np.float32), variant)
    assert got.shape == (3, 26, 67)
    assert _matches(got, oracle, np.abs(oracle).mean(), variant)


@pytest.mark.skipif("avx512-vnni-int8" not in VARIANTS, reason="no AVX-512 VNNI here")
def test_int8_takes_the_int8_head_only_without_amx_and_bf16_never(monkeypatch):
    from sss_rt.precision import head_variant

    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "avx2 avx512f avx512bw avx512_vnni")  # no AMX
    assert head_variant("int8") == "avx512-vnni-int8"
    assert head_variant("bf16") is None and head_variant("fp32") is None
    monkeypatch.setenv("SSS_RT_HEAD_VARIANT", "avx512-vnni-int8")  # not a bf16 kernel
    assert head_variant("bf16") is None
    if "amx-bf16" in VARIANTS:  # with AMX, its bf16 head stays the int8 precision's choice
        monkeypatch.delenv("SSS_RT_HEAD_VARIANT")
        monkeypatch.setenv("SSS_RT_CPU_FLAGS", "avx512f avx512bw avx512_vnni amx_tile amx_bf16")
        assert head_variant("int8") == "amx-bf16"


def test_auto_picks_bf16_only_with_a_bf16_unit(monkeypatch):
    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "sse2 avx2 avx512f avx512_vnni")
    assert resolve_precision("auto") == "fp32"
    assert head_variant("bf16") is None  # the head kernel follows the simulated flags too
    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "avx512f avx512_bf16")
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "avx512f amx_tile amx_bf16")
    assert resolve_precision("auto") == "bf16"
    assert resolve_precision("int8") == "int8"
    with pytest.raises(ValueError, match="auto, fp32, bf16, int8"):
        resolve_precision("fp16")


def test_a_cpu_without_bf16_runs_auto_in_fp32(monkeypatch):
    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "sse2 avx2 fma")
    with Extractor(device="cpu", precision="auto") as ex:
        d = ex.backend.describe()
        assert d["precision"] == "fp32" and d["backend"] == "onnxruntime"
        assert ex.extract(_photos()[0][:40, :56]).embedding.shape == (40, 56, 3)
    with pytest.raises(BackendUnavailableError, match="AMX-BF16 or AVX512-BF16"):
        Extractor(device="cpu", precision="bf16")


def test_cli_bf16_on_a_cpu_without_it_is_one_line_and_exit_code(monkeypatch, tmp_path, capsys):
    from sss_rt.cli import main

    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "sse2 avx2")
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), _photos()[0][:32, :32])
    with pytest.raises(SystemExit) as done:
        main(["extract", str(photo), "-o", str(tmp_path / "o"), "--precision", "bf16", "-q"])
    err = capsys.readouterr().err
    assert done.value.code not in (0, None)
    assert "AVX512-BF16" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_info_reports_units_and_what_auto_picks(monkeypatch):
    from click.testing import CliRunner

    from sss_rt.cli import cli

    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "avx2 avx512f avx512_vnni")
    out = CliRunner().invoke(cli, ["info"]).output
    assert "precision_auto_picks: fp32" in out and "bf16_runs_on: no bf16 unit" in out
    monkeypatch.setenv("SSS_RT_CPU_FLAGS", "avx512f amx_tile amx_bf16 amx_int8")
    out = CliRunner().invoke(cli, ["info"]).output
    assert "precision_auto_picks: bf16" in out and "bf16_runs_on: AMX-BF16" in out


def _photos():
    return [
        cv2.resize(load_image(p), (480, 360), interpolation=cv2.INTER_AREA)
        for p in sorted(examples_dir().glob("*.jpg"))
    ]


@needs_bf16_engine
def test_bf16_embeddings_within_the_gates():
    with Extractor(device="cpu") as fp32, Extractor(device="cpu", precision="bf16") as bf16:
        assert bf16.backend.splits and bf16.backend.describe()["backend"] == "openvino"
        for photo in _photos():
            d = np.abs(bf16.extract(photo).embedding - fp32.extract(photo).embedding)
            assert d.mean() <= 0.003, d.mean()
            assert np.percentile(d, 99) <= 0.02, np.percentile(d, 99)
            assert d.max() > 0  # bf16 really ran


@needs_bf16_engine
def test_bf16_split_matches_openvino_whole_graph():
    """The split path (fp32 input tap, bf16 trunk, bf16 head kernel) against OpenVINO's own
    bf16 whole graph: both are bf16 renderings of the same network."""
    from sss_rt.backends import create_backend
    from sss_rt.extractor import default_model_path

    photo = _photos()[1][:96, :128]
    split = create_backend("openvino", default_model_path(), device="cpu", precision="bf16")
    whole = create_backend(
        "openvino", default_model_path(), device="cpu", precision="bf16", execution="whole"
    )
    fp32 = create_backend("onnxruntime", default_model_path(), device="cpu")
    a, b, ref = (be.run(photo[None])[0] for be in (split, whole, fp32))
    scale = np.abs(ref).mean()
    assert np.abs(a - ref).mean() <= np.abs(b - ref).mean()  # the split is the closer one
    assert np.abs(a - ref).mean() <= 0.01 * scale


@needs_bf16_engine
def test_bf16_held_out_pair_auc_within_0_005_of_fp32():
    from sss_rt.synthetic import HELD_OUT_SEED, SyntheticScenes
    from sss_rt.training.evaluate import evaluate

    scenes = SyntheticScenes((160, 160), seed=HELD_OUT_SEED)
    with Extractor(device="cpu") as fp32, Extractor(device="cpu", precision="bf16") as bf16:
        a = evaluate(fp32, scenes, 12, seed=0).pair_auc
        b = evaluate(bf16, scenes, 12, seed=0).pair_auc
    assert a > 0.85
    assert abs(a - b) <= 0.005, (a, b)
