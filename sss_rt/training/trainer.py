"""The seed's training procedure: one image per step, 10 instance-balanced samplings, SGD."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from sss_rt.network.checkpoint import load_checkpoint, save_checkpoint
from sss_rt.network.model import HypercolumnNet
from sss_rt.training.datasets import make_dataset
from sss_rt.training.loss import npair_l2_loss
from sss_rt.training.sampling import sample_pixels

log = logging.getLogger("sss_rt.train")


@dataclass
class TrainConfig:
    """Training settings; defaults are the seed's (section 1) unless noted."""

    backbone: str = "resnet101"
    iterations: int = 60_000
    lr_backbone: float = 5e-4
    lr_new: float = 5e-3
    optimizer: str = "sgd"  # sgd (the seed's) | adamw (not in the seed; momentum unused)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    dropout: float = 0.5
    feature_scale: float = 1.0  # fixed factor on the output (not in the seed; see HypercolumnNet)
    n_instances: int = 3
    n_pixels: int = 1000
    samplings: int = 10
    crop: int = 321  # training crop side (DeepLab's usual size)
    scale_range: tuple[float, float] = (0.5, 1.5)
    flip: bool = True
    freeze_bn: bool = False  # keep BatchNorm statistics fixed (useful with pretrained init)
    seed: int = 0
    device: str = "cpu"
    init: str | None = None  # torchvision ResNet / DeepLabV3 state-dict file for the backbone
    data: str = "synthetic"  # synthetic | folder:PATH | coco:IMAGES,JSON[,STUFF]
    synthetic_size: int = 256
    save_every: int = 500
    log_every: int = 20
    deterministic: bool = True  # deterministic kernels: a resumed run repeats the straight one
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        values = json.loads(Path(path).read_text())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        if "scale_range" in values:
            values = {**values, "scale_range": tuple(values["scale_range"])}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale_range"] = list(self.scale_range)
        return d


def augment(
    image: np.ndarray, instances: np.ndarray, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, random crop (zero-padded, padding unlabelled) and horizontal flip."""
    s = rng.uniform(*cfg.scale_range)
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    instances = cv2.resize(instances, (nw, nh), interpolation=cv2.INTER_NEAREST)
    c = cfg.crop
    ph, pw = max(c - nh, 0), max(c - nw, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        instances = np.pad(instances, ((0, ph), (0, pw)))
    y = rng.integers(0, image.shape[0] - c + 1)
    x = rng.integers(0, image.shape[1] - c + 1)
    image, instances = image[y : y + c, x : x + c], instances[y : y + c, x : x + c]
    if cfg.flip and rng.random() < 0.5:
        image, instances = image[:, ::-1], instances[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(instances)


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    return base * (1.0 - iteration / total) ** power


class Trainer:
    """Runs training; ``run()`` resumes from the latest checkpoint in ``out_dir`` if present."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, dataset: Any = None):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.dataset = dataset or make_dataset(cfg.data, cfg.seed, cfg.synthetic_size)
        torch.manual_seed(cfg.seed)
        self.net = HypercolumnNet(
            cfg.backbone, dropout=cfg.dropout, feature_scale=cfg.feature_scale
        ).to(cfg.device)
        self.init_report = None
        if cfg.init:
            from sss_rt.training.init import load_backbone

            self.init_report = load_backbone(self.net, cfg.init)
            log.info(
                "backbone init: %d tensors loaded, missing %s, unexpected %s",
                self.init_report.loaded,
                self.init_report.missing,
                self.init_report.unexpected,
            )
        new_ids = {id(p) for m in self.net.new_layers() for p in m.parameters()}
        backbone_params = [p for p in self.net.parameters() if id(p) not in new_ids]
        new_params = [p for p in self.net.parameters() if id(p) in new_ids]
        groups = [
            {"params": backbone_params, "lr": cfg.lr_backbone, "base_lr": cfg.lr_backbone},
            {"params": new_params, "lr": cfg.lr_new, "base_lr": cfg.lr_new},
        ]
        if cfg.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        elif cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adamw)")
        self.iteration = 0
        self.skipped = 0
        self.history: list[dict[str, float]] = []
        self.wall_time = 0.0

    @property
    def latest_path(self) -> Path:
        return self.out_dir / "latest.pt"

    def state(self) -> dict[str, Any]:
        return {
            "backbone": self.cfg.backbone,
            "feature_scale": self.cfg.feature_scale,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "skipped": self.skipped,
            "config": json.dumps(self.cfg.to_dict()),
            "history": json.dumps(self.history),
            "wall_time": self.wall_time,
            "rng": {"torch": torch.get_rng_state()},
            "meta": {
                "backbone": self.cfg.backbone,
                "iterations": self.iteration,
                "data": self.cfg.data,
                "seed": self.cfg.seed,
                "feature_scale": self.cfg.feature_scale,
                "wall_time_s": round(self.wall_time, 1),
            },
        }

    def save(self, path: Path | None = None) -> Path:
        path = path or self.latest_path
        save_checkpoint(path, self.state())
        return path

    def load(self, path: str | Path) -> None:
        state = load_checkpoint(path)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.skipped = int(state.get("skipped", 0))
        self.history = json.loads(state.get("history", "[]"))
        self.wall_time = float(state.get("wall_time", 0.0))
        torch.set_rng_state(state["rng"]["torch"])

    def _set_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = poly_lr(
                group["base_lr"], self.iteration, self.cfg.iterations, self.cfg.poly_power
            )

    def step(self) -> float | None:
        """One update on one image; returns the loss, or None if the image was skipped."""
        cfg = self.cfg
        # all randomness of an iteration derives from (seed, iteration): resuming is exact
        rng = np.random.default_rng((cfg.seed, 1, self.iteration))
        torch.manual_seed(cfg.seed * 1_000_003 + self.iteration)
        image, instances = self.dataset[int(rng.integers(0, len(self.dataset)))]
        image, instances = augment(image, instances, cfg, rng)
        samples = [
            sample_pixels(instances, rng, cfg.n_instances, cfg.n_pixels)
            for _ in range(cfg.samplings)
        ]
        if samples[0] is None:
            self.skipped += 1
            return None
        self.net.train()
        if cfg.freeze_bn:
            for m in self.net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        self._set_lr()
        x = torch.from_numpy(image[None]).to(cfg.device)
        # the network's features at the sampled pixels only (the loss reads nothing else)
        pixels, where = np.unique(np.concatenate([idx for idx, _ in samples]), return_inverse=True)
        feats = self.net.forward_at(x, torch.from_numpy(pixels).to(cfg.device))
        offsets = np.cumsum([0] + [idx.size for idx, _ in samples])
        total = 0.0
        loss = feats.new_zeros(())
        for (_, labels), a, b in zip(samples, offsets[:-1], offsets[1:], strict=True):
            one = npair_l2_loss(
                feats[torch.from_numpy(where[a:b]).to(cfg.device)],
                torch.from_numpy(labels).to(cfg.device),
            )
            loss = loss + one
            total += float(one.detach())
        # one backward of the summed losses = the gradients of the samplings accumulated
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return total / len(samples)

    def run(
        self,
        iterations: int | None = None,
        resume: bool = True,
        callback: Callable[[int, float], None] | None = None,
    ) -> None:
        """Train until ``iterations`` (default: the configured total), checkpointing as it goes."""
        previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        torch.use_deterministic_algorithms(self.cfg.deterministic, warn_only=True)
        try:
            self._run(iterations, resume, callback)
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])

    def _run(
        self,
        iterations: int | None,
        resume: bool,
        callback: Callable[[int, float], None] | None,
    ) -> None:
        stop = min(iterations or self.cfg.iterations, self.cfg.iterations)
        if resume and self.latest_path.is_file():
            self.load(self.latest_path)
            log.info("resumed at iteration %d", self.iteration)
        window: list[float] = []
        t0 = time.perf_counter()
        last_log = t0
        while self.iteration < stop:
            loss = self.step()
            self.iteration += 1
            now = time.perf_counter()
            self.wall_time += now - t0
            t0 = now
            if loss is not None:
                window.append(loss)
                if callback:
                    callback(self.iteration, loss)
            if self.iteration % self.cfg.log_every == 0 and window:
                rate = self.cfg.log_every / max(now - last_log, 1e-9)
                last_log = now
                mean = float(np.mean(window))
                self.history.append({"iteration": self.iteration, "loss": mean})
                log.info(
                    "it %d/%d  loss %.4f  %.2f it/s  lr %.2e",
                    self.iteration,
                    self.cfg.iterations,
                    mean,
                    rate,
                    self.optimizer.param_groups[1]["lr"],
                )
                window = []
            if self.iteration % self.cfg.save_every == 0 or self.iteration == stop:
                self.save()
