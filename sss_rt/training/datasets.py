"""Training data readers: a plain folder layout and the COCO-Stuff layout.

Every dataset yields ``(image H×W×3 uint8 RGB, instances H×W int32)`` where each distinct
positive id is one instance and 0 is unlabelled (never sampled).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from sss_rt.io.images import IMAGE_EXTENSIONS, load_image


class FolderDataset:
    """``ROOT/images/NAME.{jpg,png,…}`` with ``ROOT/instances/NAME.png`` (8/16-bit id maps)."""

    def __init__(self, root: str | Path):
        root = Path(root)
        self.items: list[tuple[Path, Path]] = []
        for img in sorted((root / "images").iterdir()):
            if img.suffix.lower() in IMAGE_EXTENSIONS:
                ann = root / "instances" / (img.stem + ".png")
                if ann.is_file():
                    self.items.append((img, ann))
        if not self.items:
            raise FileNotFoundError(
                f"no image/instance pairs under {root}/images, {root}/instances"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, ann_path = self.items[index % len(self.items)]
        image = load_image(img_path)
        ids = cv2.imread(str(ann_path), cv2.IMREAD_UNCHANGED)
        if ids is None or ids.shape[:2] != image.shape[:2]:
            raise ValueError(f"{ann_path}: unreadable or not the image's size")
        if ids.ndim == 3:  # colour-coded ids
            ids = (
                ids[..., 0].astype(np.int32)
                | (ids[..., 1].astype(np.int32) << 8)
                | (ids[..., 2].astype(np.int32) << 16)
            )
        return image, ids.astype(np.int32)


def decode_rle(counts: list[int] | str, height: int, width: int) -> np.ndarray:
    """Decode a COCO run-length encoding (list or compressed string; column-major) to a mask."""
    if isinstance(counts, str):
        counts = _decode_compressed_counts(counts)
    flat = np.zeros(height * width, np.uint8)
    pos, value = 0, 0
    for run in counts:
        if value:
            flat[pos : pos + run] = 1
        pos += run
        value ^= 1
    return flat.reshape(width, height).T.astype(bool)


def _decode_compressed_counts(s: str) -> list[int]:
    """COCO's compressed RLE string: 5-bit groups with continuation, deltas after the 3rd run."""
    counts: list[int] = []
    i = 0
    while i < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[i]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


class CocoStuffDataset:
    """COCO instance annotations (JSON) + COCO-Stuff label maps (PNG, 255 = unlabelled).

    Thing instances come from the JSON (polygons or RLE); every stuff class region of the label
    map counts as one instance. Things are drawn over stuff.
    """

    def __init__(
        self,
        images_dir: str | Path,
        instances_json: str | Path,
        stuff_dir: str | Path | None = None,
        first_stuff_label: int = 91,
    ):
        self.images_dir = Path(images_dir)
        self.stuff_dir = Path(stuff_dir) if stuff_dir else None
        self.first_stuff_label = first_stuff_label
        data = json.loads(Path(instances_json).read_text())
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.anns: dict[int, list[dict]] = {}
        for ann in data.get("annotations", []):
            self.anns.setdefault(ann["image_id"], []).append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        meta = self.images[index % len(self.images)]
        image = load_image(self.images_dir / meta["file_name"])
        h, w = image.shape[:2]
        ids = np.zeros((h, w), np.int32)
        if self.stuff_dir is not None:
            stuff_path = self.stuff_dir / (Path(meta["file_name"]).stem + ".png")
            labels = cv2.imread(str(stuff_path), cv2.IMREAD_UNCHANGED)
            if labels is not None:
                stuff = (labels >= self.first_stuff_label) & (labels != 255)
                ids[stuff] = 100_000 + labels[stuff].astype(np.int32)
        for n, ann in enumerate(self.anns.get(meta["id"], []), start=1):
            mask = self._mask(ann, h, w)
            ids[mask] = n
        return image, ids

    @staticmethod
    def _mask(ann: dict, h: int, w: int) -> np.ndarray:
        seg = ann["segmentation"]
        if isinstance(seg, dict):
            return decode_rle(seg["counts"], *seg["size"])
        mask = np.zeros((h, w), np.uint8)
        polys = [np.asarray(p, np.float64).reshape(-1, 2) for p in seg if len(p) >= 6]
        if polys:
            cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in polys], 1)
        return mask.astype(bool)


def make_dataset(spec: str, seed: int, synthetic_size: int):
    """Build a dataset from ``synthetic``, ``folder:PATH`` or ``coco:IMAGES,JSON[,STUFF]``."""
    from sss_rt.synthetic import SyntheticScenes

    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        return SyntheticScenes((synthetic_size, synthetic_size), seed=seed)
    if kind == "folder":
        return FolderDataset(arg)
    if kind == "coco":
        parts = arg.split(",")
        return CocoStuffDataset(*parts)
    raise ValueError(f"unknown data spec {spec!r}")
