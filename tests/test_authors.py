"""The authors' network: the checkpoint reader, the import, parity with their own TF graph.

Fixtures (``tests/authors/``, made by ``make_fixture.py`` with TensorFlow; CI needs none):
``parity.npz`` holds two crops (53×67 odd, 60×64 even) and the features the authors' graph
computed for them with ``random_weights(0)``; ``checkpoints/`` holds checkpoints TensorFlow's
SaveV2 wrote. Tolerances (the issue's): max |Δ| ≤ 2e-2 and mean |Δ| ≤ 2e-3 against the
authors' output (values up to ~13 here); measured ~3e-4 / 5e-5.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent / "authors"
sys.path.insert(0, str(HERE))

from make_fixture import many_tensors  # noqa: E402
from sss_rt.export.tf_checkpoint import CheckpointReader  # noqa: E402
from tf_writer import compress_first_block, write_checkpoint  # noqa: E402

from sss_rt.errors import ImageError, ModelError  # noqa: E402
from sss_rt.families import authors_graph as ag  # noqa: E402

MAX_ABS, MEAN_ABS = 2e-2, 2e-3
TF_FILES = HERE / "checkpoints"


def parity_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    data = np.load(HERE / "parity.npz")
    return [(data[f"image{i}"], data[f"features{i}"].transpose(2, 0, 1)) for i in range(2)]


def within(out: np.ndarray, ref: np.ndarray) -> tuple[bool, float, float]:
    err = np.abs(out - ref)
    return (
        bool(err.max() <= MAX_ABS and err.mean() <= MEAN_ABS),
        float(err.max()),
        float(err.mean()),
    )


# -- the reader, on files TensorFlow wrote -------------------------------------------------


def test_reader_reads_every_tensor_tensorflow_wrote():
    reader = CheckpointReader(TF_FILES / "many")  # a folder whose `checkpoint` names /home/...
    expected = many_tensors()
    assert set(reader.entries) == set(expected)
    for name, value in expected.items():
        got = reader.read(name)
        assert got.dtype == value.dtype and got.shape == value.shape, name
        np.testing.assert_array_equal(got, value)


def test_reader_index_spans_several_blocks():
    from sss_rt.export.tf_checkpoint import _block_entries, _varint

    data = (TF_FILES / "many" / "model.ckpt-60000.index").read_bytes()
    footer = data[-48:]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)
    offset, pos = _varint(footer, pos)
    size, _ = _varint(footer, pos)
    assert len(list(_block_entries(CheckpointReader._block(data, offset, size)))) >= 2


@pytest.mark.parametrize("form", ["folder", "prefix", "index", "data"])
def test_reader_accepts_folder_prefix_index(form):
    prefix = TF_FILES / "many" / "model.ckpt-60000"
    path = {
        "folder": prefix.parent,
        "prefix": prefix,
        "index": Path(str(prefix) + ".index"),
        "data": Path(str(prefix) + ".data-00000-of-00001"),
    }[form]
    assert CheckpointReader(path).prefix == prefix


def test_reader_refuses_sliced_entries_and_hides_slice_keys():
    reader = CheckpointReader(TF_FILES / "sliced")
    assert set(reader.entries) == {"partitioned/weights", "plain/biases"}
    np.testing.assert_array_equal(reader.read("plain/biases"), np.ones(3, np.float32))
    with pytest.raises(ModelError, match="partitioned/weights is stored in slices"):
        reader.read("partitioned/weights")


def test_reader_truncated_data_file(tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(TF_FILES / "many", folder)
    data = folder / "model.ckpt-60000.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    reader = CheckpointReader(folder)
    last = max(reader.entries.values(), key=lambda e: e.offset)
    with pytest.raises(ModelError, match="truncated"):
        reader.read(last.name)


def test_reader_corrupt_data_fails_its_crc(tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(TF_FILES / "many", folder)
    data = folder / "model.ckpt-60000.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    reader = CheckpointReader(folder)
    entry = max(reader.entries.values(), key=lambda e: e.size)
    raw[entry.offset] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="CRC32C"):
        CheckpointReader(folder).read(entry.name)


def test_reader_compressed_block(tmp_path):
    prefix = write_checkpoint(tmp_path / "m.ckpt", {"a": np.ones(3, np.float32)})
    assert CheckpointReader(prefix).read("a").sum() == 3
    compress_first_block(str(prefix) + ".index")
    with pytest.raises(ModelError, match="compressed"):
        CheckpointReader(prefix)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10, bytes(range(256)) * 4])
def test_reader_non_checkpoint_file(tmp_path, content):
    path = tmp_path / "x.index"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="not a TensorFlow V2 checkpoint index"):
        CheckpointReader(path)


def test_reader_missing_paths(tmp_path):
    with pytest.raises(ModelError, match="checkpoint not found"):
        CheckpointReader(tmp_path / "nope")
    with pytest.raises(ModelError, match="without a 'checkpoint' file"):
        CheckpointReader(tmp_path)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gone.ckpt"\n')
    with pytest.raises(ModelError, match=r"gone\.ckpt"):
        CheckpointReader(tmp_path)


# -- the import ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The parity weights written as a checkpoint (with optimizer slots and a step counter, as
    a training run leaves them), imported with the command line."""
    from sss_rt.cli import main

    folder = tmp_path_factory.mktemp("authors")
    tensors = ag.random_weights(0, moving_statistics=True)
    tensors["conv1/weights/Momentum"] = np.zeros((7, 7, 3, 64), np.float32)
    tensors["global_step"] = np.array(60000, np.int64)
    write_checkpoint(folder / "model" / "model.ckpt-60000", tensors)
    out = folder / "authors.onnx"
    with pytest.raises(SystemExit) as done:
        main(["import-authors", str(folder / "model"), "-o", str(out)])
    assert done.value.code == 0
    return out


def test_import_metadata(imported, capsys):
    from sss_rt.cli import main
    from sss_rt.model_info import read_model_info

    info = read_model_info(imported)
    assert info.family == "authors" and info.channel_order == "BGR"
    assert info.mean == ag.MEAN_BGR and info.feature_dim == 128
    assert info.source["variables_read"] == 330
    assert info.source["variables_in_checkpoint"] == 330 + 2 * 104 + 2  # + moving stats, slot, step
    assert len(info.source["sha256"]) == 64
    with pytest.raises(SystemExit):
        main(["info", "--model", str(imported)])
    shown = capsys.readouterr().out
    assert "family: authors" in shown and info.source["sha256"] in shown


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "openvino"])
@pytest.mark.parametrize("whole", [True, False])
def test_imported_model_equals_the_authors_graph(imported, backend, whole):
    if backend == "torch":
        pytest.importorskip("torch")
    from sss_rt.backends import create_backend

    b = create_backend(backend, imported, device="cpu", precision="fp32")
    assert b.splits
    for image, ref in parity_cases():
        out = b.features(image, whole=whole).rows(0, image.shape[0])
        ok, worst, mean = within(out, ref)
        assert ok, (backend, whole, image.shape, worst, mean)


def test_dense_layers_on_the_engine_equal_the_authors_graph(imported):
    """OpenVINO running fc1/fc2 itself (what it does in bf16; forced here in fp32)."""
    from sss_rt.backends import create_backend

    b = create_backend("openvino", imported, device="cpu", precision="fp32", engine_head=True)
    assert b._dense is not None
    for image, ref in parity_cases():
        ok, worst, mean = within(b.features(image).rows(0, image.shape[0]), ref)
        assert ok, (image.shape, worst, mean)


@pytest.mark.parametrize(
    "variant",
    ["half_pixel_resize", "symmetric_padding", "folded_moving_statistics", "no_reflect_pad"],
)
def test_each_departure_fails_the_tolerance(variant):
    """The tolerance is tight enough to see every rule that differs from theirs."""
    import onnxruntime as ort

    weights = ag.random_weights(0, moving_statistics=True)
    moving = {
        bn: (weights[f"{bn}/moving_mean"], weights[f"{bn}/moving_variance"])
        for bn in ag.batch_norms()
    }
    change = {
        "half_pixel_resize": {"resize": "half_pixel"},
        "symmetric_padding": {"padding": "symmetric"},
        "folded_moving_statistics": {"moving_statistics": moving},
        "no_reflect_pad": {"reflect_pad": 0},
    }[variant]
    for ours in ({}, change):
        session = ort.InferenceSession(ag.build_onnx(weights, variant=ours).SerializeToString())
        results = []
        for image, ref in parity_cases():
            results.append(within(session.run(None, {"image": image[None]})[0][0], ref)[0])
        assert all(results) == (not ours), (variant, results)


def test_split_bands_and_projection_equal_the_whole_graph(imported):
    from sss_rt.backends import create_backend

    b = create_backend("onnxruntime", imported, device="cpu")
    image, _ = parity_cases()[0]
    whole = b.features(image, whole=True).rows(0, image.shape[0])
    source = b.features(image)
    scale = np.abs(whole).max()
    np.testing.assert_allclose(source.rows(7, 31), whole[:, 7:31], atol=1e-5 * scale)
    np.testing.assert_allclose(source.region(3, 20, 11, 40), whole[:, 3:20, 11:40],
                               atol=1e-5 * scale)  # fmt: skip
    v = np.random.default_rng(0).standard_normal((3, 128))
    shift = whole.reshape(128, -1).mean(axis=1)
    expected = np.einsum("kc,chw->khw", v, whole[:, 5:45] - shift[:, None, None])
    np.testing.assert_allclose(source.projected_rows(5, 45, v, shift), expected,
                               atol=1e-4 * np.abs(expected).max())  # fmt: skip


def test_import_names_the_wrong_variable(tmp_path):
    from sss_rt.export.import_authors import import_authors

    cases = {
        "missing": ({"global_step": np.array(1, np.int64)}, "conv1/weights is missing"),
        "shape": (
            {"conv1/weights": np.zeros((3, 3, 3, 64), np.float32)},
            r"conv1/weights has shape \[3, 3, 3, 64\]",
        ),
        "dtype": (
            {"conv1/weights": np.zeros((7, 7, 3, 64), np.float64)},
            "conv1/weights is float64",
        ),
        "nan": ({"conv1/weights": np.full((7, 7, 3, 64), np.nan, np.float32)}, "non-finite"),
    }
    for key, (tensors, message) in cases.items():
        prefix = write_checkpoint(tmp_path / key / "m.ckpt", tensors)
        with pytest.raises(ModelError, match=message):
            import_authors(prefix, tmp_path / f"{key}.onnx")
        assert not (tmp_path / f"{key}.onnx").exists()


def test_cli_import_error_is_one_line(tmp_path, capsys):
    from sss_rt.cli import main

    bad = tmp_path / "x.index"
    bad.write_bytes(b"nothing")
    with pytest.raises(SystemExit) as done:
        main(["import-authors", str(bad), "-o", str(tmp_path / "m.onnx")])
    assert done.value.code == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_passes_the_tensorrt_parser_rules():
    from sss_rt.export.tensorrt_rules import problems

    assert problems(ag.build_onnx(ag.random_weights(0))) == []


def test_extract_and_modes_run_on_the_imported_model(imported):
    from sss_rt import Extractor

    image, _ = parity_cases()[1]
    for mode in ("exact", "fast", "matlab"):
        with Extractor(model=imported, postprocess=mode) as ex:
            r = ex.extract(image)
        assert r.embedding.shape == (*image.shape[:2], 3)
        assert r.embedding.min() >= 0 and r.embedding.max() <= 1
        assert r.embedding.std() > 0.05  # not a constant output


def test_small_images_and_int8_are_refused_clearly(imported):
    from sss_rt import Extractor

    with Extractor(model=imported) as ex, pytest.raises(ImageError, match="at least 51×51"):
        ex.extract(np.zeros((40, 80, 3), np.uint8))
    with pytest.raises(ModelError, match=r"authors family .* runs fp32, bf16, not int8"):
        Extractor(model=imported, precision="int8")


def test_images_above_the_family_limit_follow_the_max_megapixels_rules(imported, monkeypatch):
    """Past what the whole-image backbone fits in memory, the image is downscaled with the
    warning (or refused with --large refuse), as for --max-megapixels."""
    import dataclasses
    import logging

    from sss_rt import Extractor
    from sss_rt.families import FAMILIES

    small = dataclasses.replace(FAMILIES["authors"], max_megapixels=0.004)
    monkeypatch.setitem(FAMILIES, "authors", small)
    image = np.ascontiguousarray(np.tile(parity_cases()[1][0], (2, 2, 1))[:100, :100])
    records = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("sss_rt").addHandler(handler)
    try:
        with Extractor(model=imported) as ex:
            r = ex.extract(image)
    finally:
        logging.getLogger("sss_rt").removeHandler(handler)
    assert r.embedding.shape == (100, 100, 3) and r.scale < 1
    assert any("authors network on the CPU" in rec.getMessage() for rec in records)
    with (
        Extractor(model=imported, large="refuse") as ex,
        pytest.raises(ImageError, match="authors network on the CPU"),
    ):
        ex.extract(image)


def test_segment_from_the_imported_model(imported, tmp_path):
    """sss-rt segment -m with the authors' model: layers summing to one at the photo's size."""
    from PIL import Image

    from sss_rt.cli import main

    image = parity_cases()[1][0]
    Image.fromarray(np.ascontiguousarray(np.tile(image, (2, 2, 1)))).save(tmp_path / "p.png")
    args = ["segment", str(tmp_path / "p.png"), "-o", str(tmp_path / "out"), "-m", str(imported)]
    args += ["--scale", "1", "--superpixels", "100", "--eigenvectors", "20", "-q"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    with np.load(tmp_path / "out" / "p.layers.npz") as layers:
        alphas = layers["alphas"]
    assert alphas.shape[:2] == (120, 128)
    np.testing.assert_allclose(alphas.sum(axis=2), 1.0, atol=1e-5)
