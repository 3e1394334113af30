"""Training: loss (eq. 1), sampling, data readers, trainer (loss decreases, exact resume)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sss_rt.training.datasets import CocoStuffDataset, FolderDataset, decode_rle  # noqa: E402
from sss_rt.training.loss import (  # noqa: E402
    different_term,
    npair_l2_loss,
    pairwise_distances,
    same_term,
)
from sss_rt.training.sampling import sample_pixels  # noqa: E402


# ---------------------------------------------------------------- loss
@pytest.mark.parametrize("d", [0.0, 0.5, 2.0, 10.0])
def test_terms_at_known_distances(d):
    t = torch.tensor(d, dtype=torch.float64)
    assert float(same_term(t)) == pytest.approx(math.log((1 + math.exp(d)) / 2), abs=1e-12)
    assert float(different_term(t)) == pytest.approx(math.log(1 + math.exp(-d) / 2), abs=1e-12)


def test_term_limits():
    assert float(same_term(torch.tensor(0.0))) == pytest.approx(0.0, abs=1e-7)
    assert float(different_term(torch.tensor(0.0))) == pytest.approx(math.log(1.5), abs=1e-7)
    big = torch.tensor(200.0, dtype=torch.float64)
    assert float(different_term(big)) == pytest.approx(0.0, abs=1e-80)
    assert float(same_term(big)) == pytest.approx(200.0 - math.log(2.0), rel=1e-12)
    assert torch.isfinite(same_term(torch.tensor(1e4)))


def naive_loss(f: np.ndarray, labels: np.ndarray) -> float:
    n, dim = f.shape
    total = 0.0
    for p in range(n):
        for q in range(n):
            if p == q:
                continue
            d = np.linalg.norm(f[p] - f[q]) / dim
            if labels[p] == labels[q]:
                total += math.log((1 + math.exp(d)) / 2)
            else:
                total += math.log(1 + math.exp(-d) / 2)
    return total / (n * (n - 1))


def test_loss_matches_naive_double_loop(rng):
    f = rng.normal(size=(40, 128)) * 30
    labels = rng.integers(0, 3, 40)
    got = npair_l2_loss(torch.from_numpy(f), torch.from_numpy(labels))
    assert float(got) == pytest.approx(naive_loss(f, labels), rel=1e-9)


def test_loss_symmetry_and_invariances(rng):
    f = torch.from_numpy(rng.normal(size=(30, 128)) * 10)
    labels = torch.from_numpy(rng.integers(0, 3, 30))
    base = npair_l2_loss(f, labels)
    perm = torch.from_numpy(rng.permutation(30))
    # 1e-9: the distances come from a Gram matrix, whose float64 rounding depends on the order
    assert float(npair_l2_loss(f[perm], labels[perm])) == pytest.approx(float(base), rel=1e-9)
    assert float(npair_l2_loss(f + 5.0, labels)) == pytest.approx(float(base), rel=1e-9)
    d = pairwise_distances(f)
    assert torch.allclose(d, d.T)


def test_gradients_finite_with_coincident_features():
    f = torch.zeros(6, 128, requires_grad=True)
    with torch.no_grad():
        f[3:] = 1.0  # two groups, each of identical vectors: D = 0 off the diagonal too
    loss = npair_l2_loss(f, torch.tensor([0, 0, 0, 1, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all()


def test_loss_prefers_separated_instances(rng):
    labels = torch.tensor([0] * 10 + [1] * 10)
    mixed = torch.from_numpy(rng.normal(size=(20, 128)))
    separated = mixed.clone()
    separated[10:] += 500.0
    assert npair_l2_loss(separated, labels) < npair_l2_loss(mixed, labels)


# ---------------------------------------------------------------- sampling
def test_sampling_is_instance_balanced(rng):
    inst = np.zeros((50, 60), np.int32)
    inst[:, :30] = 1
    inst[:, 30:] = 2
    inst[:5, :5] = 3  # tiny instance: sampled with replacement
    inst[45:, 55:] = 0  # unlabelled
    for _ in range(5):
        idx, labels = sample_pixels(inst, rng, n_instances=3, n_pixels=100)
        assert idx.shape == labels.shape == (300,)
        np.testing.assert_array_equal(inst.reshape(-1)[idx], labels)
        assert sorted(np.unique(labels)) == [1, 2, 3]
        assert all((labels == k).sum() == 100 for k in (1, 2, 3))


def test_sampling_skips_single_instance_images(rng):
    assert sample_pixels(np.ones((10, 10), np.int32), rng) is None
    two = np.ones((10, 10), np.int32)
    two[5:] = 2
    idx, labels = sample_pixels(two, rng, n_instances=3, n_pixels=7)
    assert idx.size == 14 and set(labels) == {1, 2}


# ---------------------------------------------------------------- data readers
def test_synthetic_scenes_deterministic_and_labelled():
    pytest.importorskip("skimage")
    from sss_rt.synthetic import SyntheticScenes

    scenes = SyntheticScenes((96, 128), seed=3)
    (a, la), (b, lb) = scenes[5], scenes[5]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.shape == (96, 128, 3) and a.dtype == np.uint8 and la.shape == (96, 128)
    counts = [np.unique(scenes[i][1][scenes[i][1] > 0]).size for i in range(8)]
    assert min(counts) >= 2
    assert not np.array_equal(scenes[6][0], a)


def test_folder_dataset(tmp_path, rng):
    (tmp_path / "images").mkdir()
    (tmp_path / "instances").mkdir()
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ids = np.zeros((20, 30), np.uint16)
    ids[:, 15:] = 300
    ids[:, :15] = 2
    cv2.imwrite(str(tmp_path / "images" / "x.jpg"), img)
    cv2.imwrite(str(tmp_path / "instances" / "x.png"), ids)
    cv2.imwrite(str(tmp_path / "images" / "unannotated.png"), img)
    ds = FolderDataset(tmp_path)
    assert len(ds) == 1
    image, inst = ds[0]
    assert image.shape == (20, 30, 3)
    assert set(np.unique(inst)) == {2, 300}


def mask_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: alternating 0/1 run lengths, column-major, from 0."""
    counts, value, run = [], False, 0
    for v in mask.T.reshape(-1):
        if v != value:
            counts.append(run)
            run, value = 0, v
        run += 1
    counts.append(run)
    return counts


def rle_encode_string(mask: np.ndarray) -> str:
    """COCO's compressed RLE string (column-major runs), written from its published format."""
    counts = mask_runs(mask)
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_rle_decoding_both_forms(rng):
    mask = rng.random((13, 17)) > 0.6
    np.testing.assert_array_equal(decode_rle(mask_runs(mask), 13, 17), mask)
    np.testing.assert_array_equal(decode_rle(rle_encode_string(mask), 13, 17), mask)


def test_coco_stuff_dataset(tmp_path, rng):
    (tmp_path / "img").mkdir()
    (tmp_path / "stuff").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "0001.jpg"), rng.integers(0, 256, (40, 50, 3), np.uint8))
    stuff = np.full((40, 50), 255, np.uint8)
    stuff[:20] = 105  # sky-like stuff class
    stuff[20:] = 140  # ground-like stuff class
    cv2.imwrite(str(tmp_path / "stuff" / "0001.png"), stuff)
    blob = np.zeros((40, 50), bool)
    blob[5:15, 30:45] = True
    ann = {
        "images": [{"id": 1, "file_name": "0001.jpg", "height": 40, "width": 50}],
        "annotations": [
            {"image_id": 1, "segmentation": [[5, 5, 20, 5, 20, 25, 5, 25]], "iscrowd": 0},
            {
                "image_id": 1,
                "iscrowd": 1,
                "segmentation": {"size": [40, 50], "counts": rle_encode_string(blob)},
            },
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    ds = CocoStuffDataset(tmp_path / "img", tmp_path / "ann.json", tmp_path / "stuff")
    _, inst = ds[0]
    assert inst[10, 10] == 1 and inst[10, 35] == 2
    assert inst[2, 2] == 100_105 and inst[35, 2] == 100_140
    assert np.unique(inst).size == 4


# ---------------------------------------------------------------- trainer
def tiny_config(**kw):
    from sss_rt.training.trainer import TrainConfig

    base = dict(
        backbone="resnet18",
        iterations=40,
        crop=48,
        n_pixels=50,
        samplings=3,
        synthetic_size=64,
        save_every=4,
        log_every=4,
        lr_backbone=5e-3,
        seed=11,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_reduces_loss(tmp_path):
    pytest.importorskip("skimage")
    from sss_rt.training.trainer import Trainer

    losses: list[float] = []
    trainer = Trainer(tiny_config(iterations=40, save_every=100), tmp_path)
    trainer.run(callback=lambda it, loss: losses.append(loss))
    assert len(losses) >= 30
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert (tmp_path / "latest.pt").is_file()


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_gives_identical_weights(tmp_path, optimizer):
    pytest.importorskip("skimage")
    from sss_rt.training.trainer import Trainer

    cfg = tiny_config(iterations=8, optimizer=optimizer)
    straight = Trainer(cfg, tmp_path / "a")
    assert type(straight.optimizer).__name__.lower() == optimizer
    straight.run()
    interrupted = Trainer(cfg, tmp_path / "b")
    interrupted.run(iterations=4)  # "killed" after the checkpoint at 4
    resumed = Trainer(cfg, tmp_path / "b")
    resumed.run()
    assert resumed.iteration == 8
    for (k, a), b in zip(
        straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


def test_unknown_optimizer_is_refused(tmp_path):
    from sss_rt.training.trainer import Trainer

    with pytest.raises(ValueError, match="optimizer"):
        Trainer(tiny_config(optimizer="lbfgs"), tmp_path, dataset=[None])


def test_checkpoint_loads_weights_only_and_exports(tmp_path):
    pytest.importorskip("skimage")
    from sss_rt.export.onnx_export import export_checkpoint

    from sss_rt.model_info import read_model_info
    from sss_rt.training.trainer import Trainer

    trainer = Trainer(tiny_config(iterations=2), tmp_path)
    trainer.run()
    raw = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert raw["format"] == "sss-rt-checkpoint" and raw["iteration"] == 2
    info = export_checkpoint(tmp_path / "latest.pt", tmp_path / "m.onnx")
    assert read_model_info(tmp_path / "m.onnx").training["iterations"] == 2
    assert info.backbone == "resnet18"


def test_feature_scale_survives_checkpoint_and_export(tmp_path):
    pytest.importorskip("skimage")
    ort = pytest.importorskip("onnxruntime")
    from sss_rt.export.onnx_export import export_checkpoint

    from sss_rt.network.checkpoint import load_network
    from sss_rt.training.trainer import Trainer

    trainer = Trainer(tiny_config(iterations=2, feature_scale=8.0), tmp_path)
    trainer.run()
    net, meta = load_network(tmp_path / "latest.pt")
    assert net.feature_scale == 8.0 and meta["feature_scale"] == 8.0
    export_checkpoint(tmp_path / "latest.pt", tmp_path / "m.onnx")
    x = np.random.default_rng(0).integers(0, 256, (1, 40, 48, 3), dtype=np.uint8)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
