"""Feature bands: every backend's split execution against its whole graph, the head's engines
and chunking, the trunk's graph surgery, and the banded post-processing (every mode, both
engines) against the whole image in memory."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest

from sss_rt import native
from sss_rt.backends import create_backend
from sss_rt.bands import ArraySource, project
from sss_rt.errors import ModelError
from sss_rt.families.graph import cut
from sss_rt.families.hypercolumn import DEEP, T_IN, T_P1, split_deep_concat, split_model
from sss_rt.head import HeadSource
from sss_rt.postprocess import exact, run
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guide import band_filter, image_to_guide
from sss_rt.resample import area_weights, int32_taps, linear_taps

BACKENDS = ["onnxruntime", "torch"]


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(11)
    return cv2.GaussianBlur(rng.integers(0, 256, (123, 157, 3), dtype=np.uint8), (0, 0), 2)


@pytest.fixture(scope="module")
def whole(onnx_path, scene):
    """The whole graph's features in ONNX Runtime: the reference of every split."""
    be = create_backend("onnxruntime", onnx_path, device="cpu", execution="whole")
    return be.features(scene).rows(0, scene.shape[0])


def _backend(name, onnx_path, **options):
    if name == "torch":
        pytest.importorskip("torch")
    return create_backend(name, onnx_path, device="cpu", **options)


@pytest.mark.parametrize("name", BACKENDS)
def test_split_bands_match_the_whole_graph(onnx_path, scene, whole, name):
    be = _backend(name, onnx_path)
    assert be.splits
    src = be.features(scene)
    assert not src.in_memory and src.shape == whole.shape
    scale = np.abs(whole).max()
    assert np.abs(src.rows(0, 123) - whole).max() <= 1e-5 * scale
    for y0, y1 in [(0, 1), (7, 30), (60, 61), (100, 123)]:
        assert np.abs(src.rows(y0, y1) - whole[:, y0:y1]).max() <= 1e-5 * scale
    # a rectangle is computed on its own columns only, with the same values
    assert np.abs(src.region(10, 40, 33, 90) - whole[:, 10:40, 33:90]).max() <= 1e-5 * scale
    # the projection folded into the last layer equals projecting the band
    rng = np.random.default_rng(0)
    comps, shift = rng.normal(size=(3, whole.shape[0])), rng.normal(size=whole.shape[0])
    folded = src.projected_rows(20, 70, comps, shift)
    ref = project(whole[:, 20:70].copy(), comps, shift, compiled=False)
    assert np.abs(folded - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("name", BACKENDS)
def test_whole_graph_execution_is_an_array_source(onnx_path, scene, whole, name):
    be = _backend(name, onnx_path, execution="whole")
    assert not be.splits
    src = be.features(scene)
    assert src.in_memory
    assert np.abs(src.rows(0, 123) - whole).max() <= 1e-5 * np.abs(whole).max()


def test_head_engines_and_chunking_agree(onnx_path, scene, whole):
    src = create_backend("onnxruntime", onnx_path, device="cpu").features(scene)
    numpy_head = HeadSource(src.w, src.t_in, src.t_p1, src.deep, compiled=False)
    assert numpy_head.compiled is False and src.compiled == native.available()
    scale = np.abs(whole).max()
    assert np.abs(numpy_head.rows(0, 123) - whole).max() <= 1e-5 * scale
    assert np.abs(numpy_head.region(5, 9, 100, 157) - whole[:, 5:9, 100:]).max() <= 1e-5 * scale
    # the 512-channel intermediate a few rows at a time (3 rows per chunk here, not all 45)
    small = HeadSource(src.w, src.t_in, src.t_p1, src.deep)
    small.CHUNK_MB = 1
    np.testing.assert_allclose(small.rows(5, 50), src.rows(5, 50), rtol=0, atol=1e-6 * scale)


def test_deep_taps_projected_one_at_a_time(onnx_path, scene):
    import onnxruntime as ort

    model = onnx.load(onnx_path)
    nodes = {n.name: n for n in model.graph.node}
    trunk = cut(model, [nodes[T_IN].input[0], nodes[T_P1].input[0], nodes[DEEP].output[0]])
    split = split_deep_concat(trunk)
    assert any(n.op_type == "Concat" for n in trunk.graph.node)
    consumers = [n for n in split.graph.node if n.name.startswith(DEEP)]
    assert [n.op_type for n in consumers].count("Conv") == 3 and not any(
        n.op_type == "Concat" for n in consumers
    )

    def outputs(m):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"image": scene[None]})

    for a, b in zip(outputs(trunk), outputs(split), strict=True):
        assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max()


def test_split_refuses_graphs_that_are_not_ours():
    x = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["image"], ["features"])], "g", [x], [y]
    )
    with pytest.raises(ModelError, match="cannot be split"):
        split_model(onnx.helper.make_model(graph))


def test_linear_taps_follow_onnx_half_pixel_rule():
    i0, i1, w1 = linear_taps(8, 2)  # ×4: x_src = (x + 0.5) / 4 − 0.5, clamped to [0, 1]
    src = np.clip((np.arange(8) + 0.5) / 4 - 0.5, 0, 1)
    np.testing.assert_allclose(i0 + w1, src, atol=1e-7)
    assert i0.min() == 0 and i1.max() == 1


@pytest.mark.parametrize("out,size", [((64, 97), (255, 384)), ((3, 5), (10, 17)), ((1, 1), (7, 3))])
def test_area_weights_are_opencv_inter_area(rng, out, size):
    import scipy.sparse as sp

    x = rng.normal(size=size).astype(np.float32)
    ref = cv2.resize(x, out[::-1], interpolation=cv2.INTER_AREA)
    r, c = area_weights(out[0], size[0]), area_weights(out[1], size[1])
    rows = sp.csr_matrix((r[2], r[:2]), shape=(out[0], size[0]))
    cols = sp.csr_matrix((c[2], c[:2]), shape=(out[1], size[1]))
    np.testing.assert_allclose(rows @ x.astype(np.float64) @ cols.T, ref, atol=1e-6)


@pytest.mark.parametrize("engine", ["native", "numpy"])
@pytest.mark.parametrize("b0,b1", [(0, 40), (30, 80), (83, 123)])
def test_band_filter_equals_the_whole_image_filter_inside_its_halo(scene, rng, engine, b0, b1):
    if engine == "native" and not native.available():
        pytest.skip("no compiled kernel")
    guide = image_to_guide(scene)
    cfg = PostprocessConfig(engine=engine)
    src = rng.normal(size=(5, 123, 157)).astype(np.float32)
    ref = band_filter(guide, 0, 123, cfg).filter(src)
    band = band_filter(guide, b0, b1, cfg).filter(np.ascontiguousarray(src[:, b0:b1]))
    halo = 2 * cfg.radius
    y0 = 0 if b0 == 0 else halo  # rows within 2r of a cut edge are the halo's
    y1 = b1 - b0 if b1 == 123 else b1 - b0 - halo
    np.testing.assert_allclose(band[:, y0:y1], ref[:, b0 + y0 : b0 + y1], atol=1e-5)
    # at a cut edge the band is wrong: the halo is needed
    edge = 0 if b0 > 0 else b1 - b0 - 1
    assert np.abs(band[:, edge] - ref[:, b0 + edge]).max() > 1e-3


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("mode", ["exact", "fast", "matlab"])
@pytest.mark.parametrize("engine", ["native", "numpy"])
def test_streamed_bands_give_the_in_memory_result(
    onnx_path, monkeypatch, name, mode, engine, scene
):
    """Small bands, nothing held: each mode reads the split source band by band (odd sizes:
    fast mode's area weights, bands that are not multiples of anything)."""
    if engine == "native" and not native.available():
        pytest.skip("no compiled kernel")
    image = cv2.resize(scene, (151, 117))
    src = _backend(name, onnx_path).features(image)
    ref = run(src.materialize(), image, PostprocessConfig(mode=mode, engine=engine)).embedding
    monkeypatch.setattr(exact, "KEEP_FEATURES_MB", 0)
    reads = []
    rows = src.rows
    monkeypatch.setattr(src, "rows", lambda a, b: reads.append((a, b)) or rows(a, b))
    got = run(src, image, PostprocessConfig(mode=mode, engine=engine, band_mb=1)).embedding
    assert len(reads) > 2 and max(b - a for a, b in reads) < 117  # really banded
    assert np.abs(got - ref).max() <= 1e-4


def test_array_source_bands_are_views(rng):
    feats = rng.normal(size=(4, 9, 7)).astype(np.float32)
    src = ArraySource(feats)
    assert src.in_memory and np.shares_memory(src.rows(2, 5), src.array)
    assert src.materialize() is src
    with pytest.raises(ValueError, match="C×H×W"):
        ArraySource(feats[0])


@pytest.mark.parametrize("size,low1,low2", [((37, 53), (10, 14), (5, 7)), ((8, 8), (2, 2), (1, 1))])
def test_compiled_head_rows_match_float64_reference(rng, size, low1, low2):
    """ReLU(fuse_input·t_in + up(P1) + up(D) + bias) with ONNX Resize's bilinear taps."""
    if not native.available():
        pytest.skip("no compiled kernel")
    (h, w), c, cin = size, 6, 4
    t_in = rng.normal(size=(cin, h, w)).astype(np.float32)
    fin = rng.normal(size=(c, cin)).astype(np.float32)
    bias = rng.normal(size=c).astype(np.float32)
    lows = [rng.normal(size=(c, *low)).astype(np.float32) for low in (low1, low2)]

    def upsample(low):  # separable: rows then columns, float64
        y0, y1, wy = linear_taps(h, low.shape[1])
        x0, x1, wx = linear_taps(w, low.shape[2])
        rows = low[:, y0] * (1 - wy[:, None]) + low[:, y1] * wy[:, None]
        return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx

    ref = np.einsum("cj,jhw->chw", fin.astype(np.float64), t_in) + bias[:, None, None]
    ref = np.maximum(ref + sum(upsample(low.astype(np.float64)) for low in lows), 0.0)
    y0, n = 3, h - 5
    ups = []
    for low in lows:
        yi0, yi1, wy = linear_taps(h, low.shape[1])
        lo = int(yi0[y0 : y0 + n].min())
        hi = int(yi1[y0 : y0 + n].max()) + 1
        taps = int32_taps((yi0[y0 : y0 + n] - lo, yi1[y0 : y0 + n] - lo, wy[y0 : y0 + n]))
        block = np.ascontiguousarray(low[:, lo:hi])
        ups.append((block, *taps, *int32_taps(linear_taps(w, low.shape[2]))))
    got = native.hidden_rows(t_in, fin, bias, tuple(ups), y0, n, threads=2)
    np.testing.assert_allclose(got, ref[:, y0 : y0 + n], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="out of its block"):
        bad = (np.ascontiguousarray(ups[0][0][:, :1]), *ups[0][1:])
        native.hidden_rows(t_in, fin, bias, (bad, ups[1]), y0, n)


def test_trunk_in_bands_equals_the_whole_trunk(onnx_path):
    """The hypercolumn trunk in bands of rows with halos (as images above 16 MP run it) gives
    the whole image's trunk outputs, up to float rounding."""
    import cv2

    from sss_rt import Extractor
    from sss_rt.families import trunk_tiles
    from sss_rt.model_info import INPUT_NAME

    rng = np.random.default_rng(8)
    small = rng.integers(0, 256, (70, 20, 3), dtype=np.uint8)
    image = cv2.resize(small, (200, 1100), interpolation=cv2.INTER_CUBIC)
    with Extractor(onnx_path, backend="onnxruntime", device="cpu") as ex:
        session = ex.backend._trunk

        def run(tile, keep):
            outs = session.run(None, {INPUT_NAME: tile[None]})
            return [trunk_tiles.keep_region(out[0], tile.shape[:2], keep) for out in outs]

        whole = run(image, (0, 1100, 0, 200))
        edges, columns = trunk_tiles.tile_edges(1100, 200, 200 * 300)
        assert len(edges) > 3 and all(e % trunk_tiles.STRIDE == 0 for e in edges[1:-1])
        assert columns == [0, 200]  # bands of rows, as the tiles of a narrow image are
        banded = trunk_tiles.run_in_tiles(run, image, 200 * 300)
        for w, b in zip(whole, banded, strict=True):
            assert w.shape == b.shape
            np.testing.assert_allclose(b, w, rtol=0, atol=1e-4 * max(1.0, np.abs(w).max()))
        # a halo too small for the receptive field is visibly different: the test can fail
        short = trunk_tiles.run_in_tiles(run, image, 200 * 300, halo=32)
        assert max(np.abs(s - w).max() for s, w in zip(short, whole, strict=True)) > 1e-2


def _local_trunk(tile, keep):
    """A stand-in trunk with a known receptive field (radius 16 < the halo of 32 used below):
    a 33×33 box filter, sampled at strides 1, 4 and 8, cut to ``keep``."""
    import cv2

    from sss_rt.families import trunk_tiles

    f = cv2.blur(tile.astype(np.float32), (33, 33), borderType=cv2.BORDER_REFLECT)
    outs = [np.ascontiguousarray(f[::s, ::s].transpose(2, 0, 1)) for s in (1, 4, 8)]
    return [trunk_tiles.keep_region(out, tile.shape[:2], keep) for out in outs]


@pytest.mark.parametrize(("width", "grid"), [(430, (5, 7)), (60, (5, 1))])
def test_square_tiles_give_the_whole_trunk(width, grid):
    """Square tiles with halos on every side that has a neighbour (every tile one shape, the
    last row and column of tiles reaching back; a narrow image's are bands of rows) give
    exactly the whole image's outputs of a trunk whose receptive field the halo covers; each
    tile hands back its own region only."""
    from sss_rt.families import trunk_tiles

    rng = np.random.default_rng(12)
    image = rng.integers(0, 256, (300, width, 3), dtype=np.uint8)
    shapes, kept = set(), []

    def run(tile, keep):
        shapes.add(tile.shape)
        kept.append((keep[1] - keep[0]) * (keep[3] - keep[2]))
        return _local_trunk(tile, keep)

    whole = _local_trunk(image, (0, 300, 0, width))
    tiled = trunk_tiles.run_in_tiles(run, image, 64 * 64, halo=32)
    rows, cols = trunk_tiles.tile_edges(300, width, 64 * 64)
    assert (len(rows) - 1, len(cols) - 1) == grid and len(kept) == grid[0] * grid[1]
    assert len(shapes) == 1 and sum(kept) == 300 * width  # one shape; own parts cover it once
    for w, t in zip(whole, tiled, strict=True):
        np.testing.assert_array_equal(t, w)
    # the halo matters: a trunk seeing further than it gives different outputs
    short = trunk_tiles.run_in_tiles(run, image, 64 * 64, halo=0)
    assert max(np.abs(s - w).max() for s, w in zip(short, whole, strict=True)) > 1


def test_bands_that_would_each_be_the_whole_image_run_it_once():
    """A short, very wide image: every band with its halos spans all rows, so the trunk runs
    once on the whole image, not once per band."""
    from sss_rt.families import trunk_tiles

    image = np.zeros((700, 100, 3), np.uint8)
    rows, columns = trunk_tiles.tile_edges(700, 100, 100 * 180)
    assert len(rows) > 2 and columns == [0, 100]
    assert trunk_tiles._windows(rows, 320) is None
    calls = []
    trunk_tiles.run_in_tiles(
        lambda rows, keep: calls.append((rows.shape, keep)) or [rows], image, 100 * 180
    )
    assert calls == [((700, 100, 3), (0, 700, 0, 100))]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_extractor_runs_large_images_trunk_in_bands(onnx_path, monkeypatch, backend):
    """Above TILED_ABOVE pixels (lowered here to a small image) the trunk runs in bands: ONNX
    Runtime on its memory-pattern-free session, OpenVINO (whole, a 24 MP trunk peaked at
    9.8 GB) on the trunk and fp32 input tap compiled for the bands' one shape. The same
    embedding as the whole trunk, up to float rounding."""
    import functools
    import importlib

    import cv2

    from sss_rt import Extractor
    from sss_rt.families import trunk_tiles

    if backend == "openvino":
        pytest.importorskip("openvino")
    module = importlib.import_module(f"sss_rt.backends.{backend}")
    rng = np.random.default_rng(9)
    image = cv2.resize(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8), (240, 900))
    with Extractor(onnx_path, backend=backend, device="cpu") as ex:
        whole = ex.extract(image).embedding
        calls = []
        banded_run = functools.partial(trunk_tiles.run_in_tiles, tile_pixels=240 * 256)
        monkeypatch.setattr(trunk_tiles, "TILED_ABOVE", 100_000)
        monkeypatch.setattr(  # each backend's own band size, made small here
            module,
            "run_in_tiles",
            lambda run, img, *_, **kw: calls.append(kw) or banded_run(run, img, **kw),
        )
        shapes = []
        if backend == "openvino":
            compile_ = ex.backend._compile
            monkeypatch.setattr(
                ex.backend,
                "_compile",
                lambda *a, shape=None, **k: shapes.append(shape) or compile_(*a, shape=shape, **k),
            )
        banded = ex.extract(image).embedding
        assert calls == [{}]
        if backend == "onnxruntime":
            assert ex.backend._large_trunk is not None
        else:
            windows = trunk_tiles._windows(trunk_tiles.tile_edges(900, 240, 240 * 256)[0], 320)
            assert {b - a for a, b, _, _ in windows} == {836}  # one shape for every band
            assert set(shapes) == {(1, 836, 240, 3)}  # compiled for it, once per model
            assert len(shapes) == (2 if ex.backend._tap_model is not None else 1)
            assert ex.backend._tile is None  # and released before the post-processing
    np.testing.assert_allclose(banded, whole, rtol=0, atol=1e-4)
