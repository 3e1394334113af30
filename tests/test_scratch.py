"""Scratch arrays reused between calls: same memory for a key while it fits, the byte limit,
per-thread pools, and exact results unchanged when consecutive images differ in size."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import structured_scene

from sss_rt import native
from sss_rt.postprocess import postprocess, scratch


@pytest.fixture(autouse=True)
def _clean_pool():
    scratch.release()
    yield
    scratch.release()


def test_same_key_reuses_memory_while_it_fits():
    a = scratch.array("t.a", (64, 32), np.float32)
    b = scratch.array("t.a", (16, 8), np.float64)
    assert np.shares_memory(a, b)
    assert b.shape == (16, 8) and b.dtype == np.float64 and b.flags.c_contiguous
    bigger = scratch.array("t.a", (1024, 64), np.float32)
    assert not np.shares_memory(a, bigger)
    assert scratch.held() == bigger.nbytes
    other = scratch.array("t.b", (10,), np.float32)
    assert not np.shares_memory(other, bigger)


def test_requests_beyond_the_limit_are_not_kept(monkeypatch):
    monkeypatch.setattr(scratch, "LIMIT", 1000)
    kept = scratch.array("t.small", (100,), np.float32)  # 400 bytes
    big = scratch.array("t.big", (200,), np.float32)  # 800 more: over the limit
    assert scratch.held() == kept.nbytes
    assert not np.shares_memory(big, scratch.array("t.big", (200,), np.float32))
    scratch.release()
    assert scratch.held() == 0


def test_pools_are_per_thread():
    mine = scratch.array("t.k", (100,), np.float32)
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(scratch.array("t.k", (100,), np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(mine, theirs[0])


@pytest.mark.skipif(not native.available(), reason="compiled kernel not built")
def test_exact_results_do_not_depend_on_the_previous_image():
    small = structured_scene(40, 56, seed=7)
    large = structured_scene(72, 96, seed=8)
    fresh = {}
    for name, (image, feats) in (("small", small), ("large", large)):
        scratch.release()
        fresh[name] = postprocess(feats, image)[0]
    scratch.release()
    for name, (image, feats) in (("large", large), ("small", small), ("large", large)):
        out, _ = postprocess(feats, image)
        np.testing.assert_array_equal(out, fresh[name])
    assert scratch.held() > 0
