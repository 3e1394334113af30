"""The per-user cache's one rule for derived files (TensorRT engines, int8 models): a file is
made at most once per key, under an exclusive lock on ``KEY.lock`` beside it, and rechecked
after the lock is taken, so that concurrent callers wait for one maker and reuse its result."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """The per-user cache folder: ``$SSS_RT_CACHE``, else ``$XDG_CACHE_HOME/sss-rt`` (default
    ``~/.cache/sss-rt``)."""
    root = os.environ.get("SSS_RT_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sss-rt"


def make_once(lock: Path, ready: Callable[[], bool], make: Callable[[], object]) -> None:
    """Run ``make`` unless ``ready()``; concurrent callers of one ``lock`` make it once."""
    if ready():
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        if not ready():
            make()
