"""The batch tool against hostile files, its own output tree, interruptions and full disks."""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest

from sss_rt.cli import main
from sss_rt.errors import ImageError
from sss_rt.io.images import find_images, load_image


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def png_header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header claims width × height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_header_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    """A small valid JPEG with its frame header's size rewritten to width × height."""
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def small_photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), (0, 0), 1)


@pytest.mark.parametrize("kind", ["png", "jpg"])
def test_header_bomb_in_the_middle_of_a_folder(tmp_path, onnx_path, capsys, kind):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), small_photo(1))
    (folder / f"b_bomb.{kind}").write_bytes(
        png_header_bomb() if kind == "png" else jpeg_header_bomb()
    )
    cv2.imwrite(str(folder / "c.jpg"), small_photo(2))
    out = tmp_path / "out"
    code, _, err = run_cli(["extract", folder, "-o", out, "-m", onnx_path, "-f", "png"], capsys)
    assert code == 1
    failures = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failures) == 1 and "b_bomb" in failures[0] and "MP" in failures[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.embedding.png", "c.embedding.png"]


def test_size_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_bomb())
    decoded = []
    with monkeypatch.context() as m:
        m.setattr(cv2, "imdecode", lambda *a: decoded.append(a) or None)
        with pytest.raises(ImageError, match=r"100000×100000 \(10000\.0 MP\), above the 256"):
            load_image(path, max_megapixels=64)
    assert not decoded
    # within the limit's decode allowance (4×), a file is decoded, to be downscaled later
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((300, 400, 3), np.uint8))  # 0.12 MP
    assert load_image(big, max_megapixels=0.05).shape == (300, 400, 3)
    with pytest.raises(ImageError, match=r"above the 0\.05 MP limit"):
        load_image(big, max_megapixels=0.05, large="refuse")
    with pytest.raises(ImageError, match=r"above the 0\.08 MP"):
        load_image(big, max_megapixels=0.02)


@pytest.fixture()
def encoded():
    photo = small_photo(3)
    out = {}
    for ext in ("png", "jpg", "tif", "bmp", "webp"):
        ok, buf = cv2.imencode(f".{ext}", photo)
        assert ok
        out[ext] = buf.tobytes()
    return out


@pytest.mark.parametrize("ext", ["png", "jpg", "tif", "bmp", "webp"])
def test_truncated_files_fail_with_their_name(tmp_path, encoded, ext):
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(encoded[ext][: len(encoded[ext]) * 2 // 3])
    with pytest.raises(ImageError, match=rf"cut\.{ext}"):
        load_image(path)
    path.write_bytes(encoded[ext])
    assert load_image(path).shape == (24, 32, 3)  # the whole file is fine


def test_every_way_an_input_fails_is_its_own_line(tmp_path, onnx_path, capsys, encoded):
    folder = tmp_path / "in"
    (folder / "dir.jpg").mkdir(parents=True)  # a folder named like an image: walked, empty
    (folder / "a_ok.png").write_bytes(encoded["png"])
    (folder / "b_garbage.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    (folder / "c_empty.png").write_bytes(b"")
    (folder / "d_truncated.jpg").write_bytes(encoded["jpg"][:300])
    (folder / "e_dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "f_vanishes.png").write_bytes(encoded["png"])
    (folder / "g_ok.jpg").write_bytes(encoded["jpg"])
    tasks, _ = find_images([folder])
    (folder / "f_vanishes.png").unlink()  # between listing and reading
    assert len(tasks) == 7
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["extract", folder, folder / "dir.jpg", "-o", out, "-m", onnx_path, "-f", "png"], capsys
    )
    assert code == 1 and "Traceback" not in err
    failures = sorted(line for line in err.splitlines() if line.startswith("failed:"))
    assert len(failures) == 4, err  # garbage, empty, truncated, dangling
    assert sorted(p.name for p in out.iterdir()) == ["a_ok.embedding.png", "g_ok.embedding.png"]
    with pytest.raises(ImageError, match="is a folder"):
        load_image(folder / "dir.jpg")
    with pytest.raises(ImageError, match="no such file"):
        load_image(folder / "f_vanishes.png")


def test_a_missing_input_path_is_one_failed_line_and_the_rest_goes_on(
    tmp_path, onnx_path, capsys, encoded
):
    (tmp_path / "a.png").write_bytes(encoded["png"])
    (tmp_path / "b.jpg").write_bytes(encoded["jpg"])
    out = tmp_path / "out"
    inputs = [tmp_path / "a.png", tmp_path / "nope.jpg", tmp_path / "b.jpg"]
    code, _, err = run_cli(["extract", *inputs, "-o", out, "-m", onnx_path, "-f", "png"], capsys)
    assert code == 1 and "Traceback" not in err
    failures = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failures) == 1 and "nope.jpg" in failures[0] and "no such file" in failures[0]
    assert sorted(p.name for p in out.iterdir()) == ["a.embedding.png", "b.embedding.png"]
    code, _, err = run_cli(["extract", tmp_path / "nope.jpg", "-o", out, "-m", onnx_path], capsys)
    assert code == 4 and "no such file or folder" in err  # nothing exists: nothing to do


def test_output_inside_input_is_never_an_input(tmp_path, onnx_path, capsys, encoded):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(encoded["png"])
    (photos / "b.jpg").write_bytes(encoded["jpg"])
    out = photos / "feat"
    first = None
    for _ in range(3):
        code, _, _ = run_cli(["extract", photos, "-o", out, "-m", onnx_path], capsys)
        assert code == 0
        found = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        first = first or found
        assert found == first
    assert first == ["a.embedding.png", "a.npz", "b.embedding.png", "b.npz"]
    # also when the output folder is reached through a link inside the input
    (photos / "link").symlink_to(out)
    tasks, _ = find_images([photos], exclude=out)
    assert sorted(t.source.name for t in tasks) == ["a.png", "b.jpg"]
    # a photo named explicitly is an input even inside the output folder (it was dropped, and
    # the run ended "no images found")
    (out / "c.png").write_bytes(encoded["png"])
    tasks, _ = find_images([out / "c.png", photos], exclude=out)
    assert sorted(t.source.name for t in tasks) == ["a.png", "b.jpg", "c.png"]


def test_inputs_reached_twice_are_extracted_once_and_link_loops_end(tmp_path, encoded):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.png").write_bytes(encoded["png"])
    (root / "sub" / "loop").symlink_to(root)  # a cycle
    (root / "alias.png").symlink_to(root / "sub" / "x.png")
    tasks, _ = find_images([root, root / "sub" / "x.png", root / "sub"])
    assert len(tasks) == 1


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, onnx_path, capsys, encoded, umask):
    (tmp_path / "a.png").write_bytes(encoded["png"])
    old = os.umask(umask)
    try:
        code, _, _ = run_cli(
            ["extract", tmp_path / "a.png", "-o", tmp_path / "o", "-m", onnx_path], capsys
        )
    finally:
        os.umask(old)
    assert code == 0
    for p in (tmp_path / "o").iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p


def test_default_outputs_hold_the_descriptors_and_features_are_asked_for(
    tmp_path, onnx_path, capsys, encoded
):
    (tmp_path / "a.png").write_bytes(encoded["png"])
    code, _, _ = run_cli(
        ["extract", tmp_path / "a.png", "-o", tmp_path / "o", "-m", onnx_path], capsys
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.embedding.png", "a.npz"]
    with np.load(tmp_path / "o" / "a.npz") as z:
        assert list(z) == ["embedding"] and z["embedding"].shape == (24, 32, 3)
    code, _, _ = run_cli(
        ["extract", tmp_path / "a.png", "-o", tmp_path / "f", "-m", onnx_path, "--features"],
        capsys,
    )
    with np.load(tmp_path / "f" / "a.npz") as z:
        assert sorted(z) == ["embedding", "features"] and z["features"].shape == (24, 32, 128)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_full_or_read_only_output_stops_with_one_line(
    tmp_path, onnx_path, capsys, encoded, monkeypatch, err
):
    from sss_rt.io import writers

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.png").write_bytes(encoded["png"])
    real = writers._write_png
    calls = []

    def failing(path, *args):
        calls.append(path)
        if len(calls) == 2:  # the second file: half written, then the disk is full
            with writers.atomic_path(path) as tmp:
                tmp.write_bytes(b"half")
                raise OSError(err, os.strerror(err))
        real(path, *args)

    monkeypatch.setitem(writers.FORMATS, "png", writers.FORMATS["png"].__class__(
        ".embedding.png", False, "", failing
    ))  # fmt: skip
    out = tmp_path / "o"
    code, _, errout = run_cli(
        [
            "extract",
            *(tmp_path / f"{n}.png" for n in "abc"),
            "-o",
            out,
            "-m",
            onnx_path,
            "-f",
            "png",
        ],
        capsys,
    )
    assert code == 6
    lines = [line for line in errout.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and os.strerror(err) in lines[0]
    assert "2 left to do" in errout and "Traceback" not in errout
    assert sorted(p.name for p in out.iterdir()) == ["a.embedding.png"]  # no partial file


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_run_cleans_up_and_resumes(tmp_path, onnx_path, encoded, sig, code):
    folder = tmp_path / "in"
    folder.mkdir()
    photo = cv2.resize(small_photo(4), (320, 240))
    for i in range(12):
        cv2.imwrite(str(folder / f"p{i:02d}.png"), photo)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "sss_rt",
        "extract",
        str(folder),
        "-o",
        str(out),
        "-m",
        str(onnx_path),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("*.npz"))):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "left to do" in err
    assert not list(out.glob(".*.part"))  # nothing half-written left behind
    done = len(list(out.glob("*.npz")))
    assert 0 < done < 12
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0
    assert f"{done} skipped" in rerun.stderr or f"{12 - done} extracted" in rerun.stderr
    assert len(list(out.glob("*.npz"))) == 12


@pytest.mark.parametrize(
    "backend,execution", [("openvino", "split"), ("openvino", "whole"), ("onnxruntime", "split")]
)
def test_one_extractor_shared_by_threads_gives_the_serial_results(backend, execution):
    """A service shares one Extractor across threads: every backend must take concurrent calls
    (OpenVINO's infer requests are not reentrant: one request shared by threads failed with
    'Infer Request is busy') and give each call its serial result, bit for bit (BLAS runs on
    one thread inside sss-rt and its GEMMs in fixed parts: sss_rt.blas; before that, the head's
    float32 GEMM rounded with however many threads OpenBLAS had, ±3e-7 in the embedding)."""
    from concurrent.futures import ThreadPoolExecutor

    from sss_rt import Extractor
    from sss_rt.backends import available_backends

    if not available_backends()[backend]:
        pytest.skip(f"{backend} not installed")
    rng = np.random.default_rng(11)
    images = [rng.integers(0, 256, (40 + 8 * i, 56 + 4 * i, 3), dtype=np.uint8) for i in range(4)]
    with Extractor(backend=backend, device="cpu") as ex:
        if execution == "whole":
            ex.backend._trunk = None  # the whole graph, as a model without a split runs
        serial = [ex.extract(im).embedding for im in images]
        with ThreadPoolExecutor(4) as pool:
            for _ in range(2):
                together = list(pool.map(lambda im: ex.extract(im).embedding, images))
                for got, want in zip(together, serial, strict=True):
                    np.testing.assert_array_equal(got, want)


def test_openvino_bounds_its_per_shape_caches():
    """At OpenVINO's own cache sizes every new image size kept ~5 MB for good (+500 MB over 100
    sizes, growing: benchmarks/RESULTS-openvino-sizes.md); the backend bounds both caches."""
    import os

    from sss_rt import Extractor
    from sss_rt.backends import available_backends

    if not available_backends()["openvino"]:
        pytest.skip("openvino not installed")
    import sss_rt.backends.openvino as ovb

    with Extractor(backend="openvino", device="cpu") as ex:
        # what every compile_model gets (a compiled model does not report it back)
        assert ex.backend._config["CPU_RUNTIME_CACHE_CAPACITY"] == ovb.RUNTIME_CACHE_CAPACITY
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"].isdigit()
