"""The command line, run in-process through its entry point and as a subprocess."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import loadmat

from sss_rt.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture()
def image_tree(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    for rel in ("a.jpg", "sub/a.png", "sub/deeper/c.PNG"):
        cv2.imwrite(str(root / rel), rng.integers(0, 256, (36, 52, 3), dtype=np.uint8))
    (root / "README.txt").write_text("not an image")
    return root


def test_help_lists_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "sss_rt", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for name in ("extract", "export", "info", "build-engine"):
        assert name in proc.stdout


def test_extract_all_formats_mirrors_tree_and_skips(image_tree, onnx_path, tmp_path, capsys):
    out = tmp_path / "out"
    fmts = ["-f", "npy", "-f", "npz", "-f", "png", "-f", "sss", "-f", "mat", "--features"]
    code, _, err = run_cli(["extract", image_tree, "-o", out, "-m", onnx_path, *fmts], capsys)
    assert code == 0, err
    assert "3 extracted" in err and "1 non-image files ignored" in err
    for stem in ("a", "sub/a", "sub/deeper/c"):
        feats = np.load(out / f"{stem}.npy")
        assert feats.shape == (36, 52, 128) and feats.dtype == np.float32
        with np.load(out / f"{stem}.npz") as z:
            assert z["embedding"].shape == (36, 52, 3)
            np.testing.assert_array_equal(z["features"], feats)
        png = cv2.imread(str(out / f"{stem}.embedding.png"))
        assert png.shape == (36, 52, 3)
        side = cv2.imread(str(out / f"{stem}.sss.png"))
        assert side.shape == (36, 104, 3)
        np.testing.assert_array_equal(side[:, 52:], png)
        assert loadmat(out / f"{stem}.mat")["embedmap"].shape == (36, 52, 128)
    assert not list(out.rglob("*.part"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli(["extract", image_tree, "-o", out, "-m", onnx_path, *fmts], capsys)
    assert code == 0 and "3 skipped" in err
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli(
        ["extract", image_tree, "-o", out, "-m", onnx_path, "-f", "png", "--overwrite"], capsys
    )
    assert code == 0 and "3 extracted" in err


def test_float16_and_collision_free_names(tmp_path, onnx_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    img = np.full((20, 24, 3), 120, np.uint8)
    cv2.imwrite(str(root / "x.png"), img)
    cv2.imwrite(str(root / "x.bmp"), img)
    out = tmp_path / "out"
    code, _, _ = run_cli(
        ["extract", root, "-o", out, "-m", onnx_path, "-f", "npy", "--float16"], capsys
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x.bmp.npy", "x.png.npy"]
    assert np.load(out / "x.png.npy").dtype == np.float16


def test_bad_file_is_reported_and_run_goes_on(image_tree, onnx_path, tmp_path, capsys):
    (image_tree / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    code, _, err = run_cli(["extract", image_tree, "-o", out, "-m", onnx_path, "-f", "png"], capsys)
    assert code == 1
    assert "broken.jpg" in err and "3 extracted" in err and "1 failed" in err
    assert not (out / "broken.embedding.png").exists()


def test_user_errors_are_one_line(tmp_path, capsys, onnx_path):
    code, _, err = run_cli(["extract", tmp_path / "nothing", "-o", tmp_path / "o"], capsys)
    assert code != 0 and err.startswith("error:") and "Traceback" not in err
    bad = tmp_path / "bad.onnx"
    bad.write_text("nope")
    (tmp_path / "i").mkdir()
    cv2.imwrite(str(tmp_path / "i" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    code, _, err = run_cli(["extract", tmp_path / "i", "-o", tmp_path / "o", "-m", bad], capsys)
    assert code == 3 and err.strip().count("\n") == 0 and "bad.onnx" in err


def test_build_engine_without_tensorrt(tmp_path, capsys, onnx_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    code, _, err = run_cli(["build-engine", onnx_path], capsys)
    assert code == 5
    assert "TensorRT" in err and "pip install" in err and err.count("\n") == 1


def test_info_json(onnx_path, capsys):
    code, out, _ = run_cli(["info", onnx_path, "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["model"]["backbone"] == "resnet18"
    assert report["backends"]["onnxruntime"] is True
    from sss_rt.precision import cpu_flags
    from sss_rt.segmentation import native as seg

    kernels = report["segmentation_kernels"]
    if seg.available():  # the Gram loop that runs is the widest this CPU has
        x86 = platform.machine() in ("x86_64", "AMD64")
        level = seg.grams_level(cpu_flags()) if x86 else 0
        assert kernels.startswith("native") and kernels.endswith(
            ("(generic)", "(avx2)", "(avx512)")[level]
        )
    else:
        assert kernels.startswith("scipy/numpy")
    from sss_rt.segmentation import pardiso

    factorization = report["segmentation_factorization"]
    assert factorization.startswith("MKL PARDISO" if pardiso.available() else "SuperLU")


def test_export_command(checkpoint_path, tmp_path, capsys):
    pytest.importorskip("torch")
    target = tmp_path / "e.onnx"
    code, out, _ = run_cli(["export", checkpoint_path, target], capsys)
    assert code == 0 and target.is_file() and "resnet18" in out
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    code, _, err = run_cli(["export", junk, tmp_path / "f.onnx"], capsys)
    assert code == 3 and "not a loadable sss-rt checkpoint" in err
    assert not (tmp_path / "f.onnx").exists()


def test_quickstart_on_bundled_examples(tmp_path, capsys):
    """The README's first command: the bundled model on the bundled examples, offline."""
    out = tmp_path / "out"
    code, _, err = run_cli(["extract", "--examples", "-o", out, "-f", "png"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{n}.embedding.png" for n in ("astronaut", "chelsea", "coffee", "rocket")]
    assert "4 extracted" in err


@pytest.mark.parametrize("mode", ["fast", "matlab"])
def test_extract_postprocess_modes(image_tree, onnx_path, tmp_path, capsys, mode):
    from sss_rt import Extractor

    out = tmp_path / mode
    args = ["extract", image_tree / "a.jpg", "-o", out, "-m", onnx_path, "-f", "npz"]
    code, _, err = run_cli([*args, "--postprocess", mode], capsys)
    assert code == 0, err
    got = np.load(out / "a.npz")["embedding"]
    with Extractor(onnx_path, postprocess=mode) as ex:
        expected = ex.extract(image_tree / "a.jpg").embedding
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with Extractor(onnx_path) as ex:
        assert np.abs(ex.extract(image_tree / "a.jpg").embedding - got).max() > 1e-3


def test_preprocess_is_a_deprecated_spelling_of_postprocess(
    image_tree, onnx_path, tmp_path, capsys
):
    """``--preprocess`` / ``preprocess=`` set the post-processing mode: one name now
    (``--postprocess``), the old spelling working with a note."""
    from sss_rt import Extractor

    args = ["extract", image_tree / "a.jpg", "-m", onnx_path, "-f", "npz"]
    code, _, err = run_cli([*args, "-o", tmp_path / "old", "--preprocess", "fast"], capsys)
    assert code == 0 and "--preprocess is deprecated" in err, err
    code, _, err = run_cli([*args, "-o", tmp_path / "new", "--postprocess", "fast"], capsys)
    assert code == 0 and "deprecated" not in err, err
    old, new = (np.load(tmp_path / d / "a.npz")["embedding"] for d in ("old", "new"))
    np.testing.assert_array_equal(old, new)
    both = [*args, "-o", tmp_path / "both", "--preprocess", "fast", "--postprocess", "exact"]
    code, _, err = run_cli(both, capsys)
    assert code == 2 and "--postprocess only" in err
    with pytest.warns(DeprecationWarning, match="postprocess="):
        ex = Extractor(onnx_path, preprocess="fast")
    with ex:
        assert ex.config.mode == "fast"
    with Extractor(onnx_path, postprocess="matlab") as ex:
        assert ex.config.mode == "matlab"


def test_extract_refuses_large_images_per_file(image_tree, onnx_path, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["extract", image_tree, "-o", out, "-m", onnx_path, "-f", "npy"]
    code, _, err = run_cli([*args, "--max-megapixels", "0.001", "--large", "refuse"], capsys)
    assert code == 1
    assert "above the 0.001 MP limit" in err and "3 failed" in err
    assert not list(out.rglob("*.npy"))


def test_compare_backends_reports_differences(image_tree, onnx_path, capsys):
    pytest.importorskip("torch")
    img = image_tree / "a.jpg"
    args = ["compare", f"onnxruntime:{onnx_path}", f"torch:{onnx_path}", "-i", img, "--json"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["a"]["backend"] == "onnxruntime" and report["b"]["backend"] == "torch"
    feats = report["images"][0]["features"]
    assert 0 < feats["max_rel"] < 1e-4 and feats["mean_abs"] <= feats["max_abs"]
    # a tolerance below the observed difference fails with exit code 1 and says why
    code, _, err = run_cli([*args[:-1], "--max-rel", "1e-12"], capsys)
    assert code == 1 and "above 1e-12" in err


def test_compare_spec_parsing():
    from sss_rt.cli.compare import _split

    assert _split("torch:m.onnx") == ("torch", "m.onnx")
    assert _split("m.onnx") == ("auto", "m.onnx")
    assert _split("onnxruntime") == ("onnxruntime", None)
    assert _split("C:/models/m.onnx") == ("auto", "C:/models/m.onnx")


def test_info_says_for_each_gpu_part_whether_it_is_usable_and_why_not(capsys):
    from sss_rt.cli.info import gpu_parts

    parts = gpu_parts()
    assert {"cuda post-processing", "tensorrt backend", "torch backend on cuda"} <= set(parts)
    for name, state in parts.items():
        assert state.startswith(("usable", "unavailable: ")), (name, state)
        if state.startswith("unavailable"):
            assert len(state) > len("unavailable: ") + 10  # a reason, not just the verdict
    code, out, _ = run_cli(["info"], capsys)
    assert code == 0
    assert "cuda post-processing:" in out


@pytest.mark.parametrize("where", ["a file", "under a file", "in /proc"])
def test_an_unusable_output_folder_is_one_line_before_any_work(tmp_path, capsys, monkeypatch,
                                                               where):  # fmt: skip
    """`-o photos/coffee.jpg`, `-o photos/coffee.jpg/sub`, `-o /proc/x` once printed one errno
    line per input after the network ran; now one line, exit 6, and no network built."""
    import sss_rt.extractor

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(2)
    for name in ("coffee.jpg", "cat.png"):
        cv2.imwrite(str(photos / name), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    out = {"a file": photos / "coffee.jpg", "under a file": photos / "coffee.jpg" / "sub",
           "in /proc": Path("/proc/sss-rt-test/x")}[where]  # fmt: skip

    def no_network(*a, **k):
        raise AssertionError("the network was built before the output folder was checked")

    monkeypatch.setattr(sss_rt.extractor.Extractor, "__init__", no_network)
    for command in ("extract", "segment"):
        code, _, err = run_cli([command, photos, "-o", out], capsys)
        assert code == 6, err
        lines = [x for x in err.splitlines() if x.strip()]
        assert len(lines) == 1 and str(out) in lines[0], err


def test_no_images_is_exit_4_and_examples_do_not_report_their_licence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["extract", tmp_path / "empty", "-o", tmp_path / "o"], capsys)
    assert code == 4 and "no images" in err
    code, _, err = run_cli(["extract", "--examples", "-o", tmp_path / "ex", "-f", "npz"],
                           capsys)  # fmt: skip
    assert code == 0, err
    assert "ignored" not in err


def test_segment_on_an_extract_output_folder_never_takes_embedding_images_for_photos(
    tmp_path, capsys
):
    """`sss-rt extract photos -o feats; sss-rt segment feats -o layers` once segmented the
    false-colour coffee.embedding.png as a photo. The .npz features are used, the embedding
    image is skipped and the summary says so; named explicitly it is one failed line."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(4)
    img = np.repeat(np.repeat(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8), 12, 0), 12, 1)
    cv2.imwrite(str(photos / "coffee.png"), img)
    feats = tmp_path / "feats"
    code, _, err = run_cli(["extract", photos, "-o", feats, "-q"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in feats.iterdir()) == ["coffee.embedding.png", "coffee.npz"]
    layers = tmp_path / "layers"
    code, _, err = run_cli(["segment", feats, "--photos", photos, "-o", layers], capsys)
    assert code == 0, err
    written = sorted(p.name for p in layers.iterdir())
    assert written and all(n.startswith("coffee.") for n in written), written
    assert not any("embedding" in n for n in written), written
    assert "1 sss-rt outputs skipped" in err
    code, _, err = run_cli(["segment", feats / "coffee.embedding.png", "-o", layers], capsys)
    assert code == 1 and "embedding image" in err and "not a photo" in err


def test_without_a_terminal_each_finished_file_is_one_line(image_tree, tmp_path, capsys):
    """Logs, CI and Ray workers saw nothing until the summary: now one line per file."""
    code, _, err = run_cli(["extract", image_tree, "-o", tmp_path / "o"], capsys)
    assert code == 0, err
    done = [x for x in err.splitlines() if x.startswith("done: ")]
    assert len(done) == 3 and all(x.endswith(" s)") for x in done), err
    code, _, err = run_cli(["extract", image_tree, "-o", tmp_path / "o"], capsys)
    assert sum(x.startswith("skipped: ") for x in err.splitlines()) == 3, err
    code, _, err = run_cli(["extract", image_tree, "-o", tmp_path / "q", "-q"], capsys)
    assert code == 0 and err.strip() == "", err


def test_progress_names_the_file_and_the_segmentation_stage(tmp_path):
    """On a terminal the bar shows the file in progress and, for segment, its stage."""
    from sss_rt.batch import segment_to
    from sss_rt.cli.batch_run import BarProgress
    from sss_rt.io.images import ImageTask
    from sss_rt.segmentation import SegmentConfig, SoftSegmenter
    from sss_rt.segmentation.segmenter import STAGES

    class Bar:
        def __init__(self):
            self.shown: list[str] = []

        def set_postfix_str(self, text, refresh=True):
            self.shown.append(text)

    rng = np.random.default_rng(3)
    img = np.repeat(np.repeat(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8), 10, 0), 10, 1)
    cv2.imwrite(str(tmp_path / "cat.png"), img)
    bar = Bar()
    with SoftSegmenter(config=SegmentConfig(superpixels=50, eigenvectors=10)) as seg:
        task = ImageTask(tmp_path / "cat.png", Path("cat"))
        outcomes = list(segment_to(seg, [task], tmp_path / "o", progress=BarProgress(bar)))
    assert [o.status for o in outcomes] == ["done"], outcomes
    assert bar.shown[0] == "cat.png"
    assert bar.shown[1:] == [f"cat.png: {stage}" for stage in STAGES], bar.shown
