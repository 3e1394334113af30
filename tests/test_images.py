"""Image loading: what real folders contain (a generated corpus of odd and bad files)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from sss_rt.errors import ImageError
from sss_rt.io.images import find_images, load_image


@pytest.fixture()
def photo(rng) -> np.ndarray:
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :20] = (200, 30, 10)  # red-ish left half (RGB)
    img[:, 20:] = (10, 40, 220)  # blue-ish right half
    return img


def test_exif_orientation_is_applied(tmp_path, photo):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    Image.fromarray(photo).save(path, exif=exif, quality=95)
    img = load_image(path)
    assert img.shape == (40, 30, 3)  # displayed upright: width and height swapped
    assert img[2, 15, 0] > 150 and img[-3, 15, 2] > 150  # red on top, blue at the bottom


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16"])
def test_modes_become_rgb_uint8(tmp_path, photo, mode):
    pil = Image.fromarray(photo)
    if mode == "I;16":
        arr16 = photo[..., 0].astype(np.uint16) * 257
        pil = Image.fromarray(arr16)
    elif mode == "P":
        pil = pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    else:
        pil = pil.convert(mode)
    ext = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"img{ext}"
    pil.save(path)
    img = load_image(path)
    assert img.dtype == np.uint8 and img.shape == (30, 40, 3)
    if mode in ("RGBA", "P"):
        np.testing.assert_allclose(img[5, 5], photo[5, 5], atol=40)
    if mode == "I;16":  # 16-bit scaled to 8-bit, not truncated
        assert abs(int(img[5, 5, 0]) - 200) <= 1 and abs(int(img[5, 30, 0]) - 10) <= 1


def test_sixteen_bit_rgb_scaling(tmp_path):
    arr = np.zeros((4, 4, 3), np.uint16)
    arr[..., 2] = 65535  # BGR order for OpenCV: red channel full
    arr[..., 1] = 32896  # ≈ 128 · 257
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), arr)
    img = load_image(path)
    assert tuple(img[0, 0]) == (255, 128, 0)


@pytest.mark.parametrize(
    "content,match",
    [(b"", "empty file"), (b"hello, not an image", "not a readable image")],
)
def test_bad_files_give_one_clear_message(tmp_path, content, match):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        load_image(path)


def test_truncated_file(tmp_path, photo):
    path = tmp_path / "cut.png"
    cv2.imwrite(str(path), photo)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match=r"cut\.png"):
        load_image(path)


def test_missing_path(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="no such file or folder"):
        find_images([tmp_path / "nope"])


def test_folder_walk_filters_and_mirrors(tmp_path, photo):
    (tmp_path / "x" / "y").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "x" / "UPPER.JPG"), photo)
    cv2.imwrite(str(tmp_path / "x" / "y" / "deep.png"), photo)
    (tmp_path / "x" / "notes.md").write_text("x")
    (tmp_path / "x" / "data.bin").write_bytes(b"\0")
    tasks, skipped = find_images([tmp_path / "x"])
    assert sorted(str(t.relative_stem) for t in tasks) == ["UPPER", "y/deep"]
    assert skipped == 2
    flat, _ = find_images([tmp_path / "x"], recursive=False)
    assert [t.relative_stem.name for t in flat] == ["UPPER"]


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("size", [(1, 1), (1, 57), (63, 2)])
def test_tiny_and_thin_images_extract(onnx_path, size, rng, backend):
    from sss_rt import Extractor

    if backend == "torch":
        pytest.importorskip("torch")
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    with Extractor(onnx_path, backend=backend) as ex:
        r = ex.extract(image, return_features=True)
    assert r.embedding.shape == (*size, 3) and r.features.shape == (*size, 128)
    assert np.isfinite(r.embedding).all()
    assert r.embedding.min() >= 0 and r.embedding.max() <= 1


@pytest.mark.parametrize(
    "content", [b"hello, not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"GIF89a" + b"\1" * 9]
)
def test_messages_name_the_file_and_the_cause_in_words(tmp_path, content):
    """Never Python internals: a text file named y.jpg once gave "cannot identify image file
    <_io.BytesIO object at 0x…>"."""
    path = tmp_path / "y.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as err:
        load_image(path)
    message = str(err.value)
    assert "y.jpg" in message and "\n" not in message
    assert "0x" not in message and "<" not in message and "_io" not in message, message
