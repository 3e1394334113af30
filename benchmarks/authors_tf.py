"""The authors' own TensorFlow graph, run under TensorFlow 2.x (``compat.v1``).

Their extractor (github.com/iyah4888/SIGGRAPH18SSS, MIT licence) was written for TensorFlow
1.4. This module imports *their unmodified source* from a checkout (``AUTHORS_SRC`` or
``--authors-src``) and builds their graph exactly as their ``main_hyper.py`` does. The one
patch is applied at import time, to the names their files import, never to their files:

1. ``import tensorflow as tf`` gets ``tensorflow.compat.v1`` (with v2 behaviour disabled:
   graphs, placeholders, sessions), plus ``tf.contrib.slim`` = the ``tf_slim`` package
   (``tf.contrib`` was removed in TensorFlow 2; ``tf_slim`` is its maintained extraction, same
   ``batch_norm``);
2. ``tensorflow.python.keras._impl.keras.initializers.he_normal`` (a TF 1.4 private path,
   used only as an initializer that the checkpoint overwrites) = ``compat.v1``'s ``he_normal``;
3. ``tensorflow.python.framework.ops.Tensor``, which ``tf_slim`` still reads and TensorFlow
   2.16+ moved, is set to ``tf.Tensor`` (a library shim; their code does not use it).

Used by ``tests/authors/make_fixture.py`` (the parity fixture) and ``benchmarks/authors.py``
(the speed comparison). Needs ``pip install tensorflow-cpu tf-slim``; nothing in sss-rt's
package or its tests imports it.
"""

from __future__ import annotations

import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def _patched_tensorflow():
    import tensorflow.compat.v1 as tf1
    import tf_slim

    tf1.disable_v2_behavior()
    from tensorflow.python.framework import ops

    if not hasattr(ops, "Tensor"):  # tf_slim still names it; TensorFlow ≥ 2.16 moved it
        ops.Tensor = tf1.Tensor
    shim = types.ModuleType("tensorflow")
    shim.__dict__.update({k: getattr(tf1, k) for k in dir(tf1) if not k.startswith("__")})
    shim.contrib = types.SimpleNamespace(slim=tf_slim)
    init = types.ModuleType("tensorflow.python.keras._impl.keras.initializers")
    init.he_normal = tf1.initializers.he_normal
    names = {
        "tensorflow": shim,
        "tensorflow.python.keras": types.ModuleType("tensorflow.python.keras"),
        "tensorflow.python.keras._impl": types.ModuleType("tensorflow.python.keras._impl"),
        "tensorflow.python.keras._impl.keras": types.ModuleType("keras"),
        "tensorflow.python.keras._impl.keras.initializers": init,
    }
    saved = {k: sys.modules.get(k) for k in names}
    sys.modules.update(names)
    try:
        yield tf1
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def import_authors(src: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(tf.compat.v1, their ``deeplab_resnet`` package) from a checkout of their repository."""
    src = Path(src)
    if not (src / "deeplab_resnet" / "hc_deeplab.py").is_file():
        raise SystemExit(f"{src}: not a checkout of the authors' extractor (no deeplab_resnet/)")
    sys.path.insert(0, str(src))
    try:
        with _patched_tensorflow() as tf1:
            import deeplab_resnet
    finally:
        sys.path.remove(str(src))
    return tf1, deeplab_resnet


class AuthorsGraph:
    """Their HyperColumn_Deeplabv2 in a session, fed as their ``main_hyper.py`` feeds it:
    RGB uint8 → BGR float minus their mean → ``tf.pad(..., 'REFLECT')`` by 50 → their graph
    → the padding cropped off. ``threads``: TensorFlow's intra-op threads (None: its default).
    """

    PAD = 50

    def __init__(self, src: str | os.PathLike[str], threads: int | None = None):
        tf, package = import_authors(src)
        self.tf = tf
        self.graph = tf.Graph()
        config = tf.ConfigProto()
        if threads:
            config.intra_op_parallelism_threads = threads
            config.inter_op_parallelism_threads = 1
        with self.graph.as_default():
            args = types.SimpleNamespace(batch_size=1, is_training=True, num_classes=183)
            self.sess = tf.Session(graph=self.graph, config=config)
            self.model = package.HyperColumn_Deeplabv2(self.sess, args)
            mean = np.array((104.00698793, 116.66876762, 122.67891434), np.float32)
            self.rgb = tf.placeholder(tf.uint8, (None, None, 3))
            r, g, b = tf.split(axis=2, num_or_size_splits=3, value=self.rgb)
            img = tf.cast(tf.concat(axis=2, values=[b, g, r]), dtype=tf.float32) - mean
            p = self.PAD
            self.padded = tf.pad(img, [[p, p], [p, p], [0, 0]], mode="REFLECT")
            self.sess.run(tf.global_variables_initializer())

    def variables(self) -> dict[str, Any]:
        """The graph's global variables by name (without ``:0``)."""
        with self.graph.as_default():
            return {v.name[:-2]: v for v in self.tf.global_variables()}

    def assign(self, weights: dict[str, np.ndarray]) -> None:
        """Load weights by name (shapes must match)."""
        variables = self.variables()
        with self.graph.as_default():
            for name, value in weights.items():
                variables[name].load(value, self.sess)

    def save(self, prefix: str) -> str:
        """A TF1 Saver V2 checkpoint of every variable (``prefix.index``, ``.data-*``,
        ``checkpoint``), as their training wrote it."""
        with self.graph.as_default():
            saver = self.tf.train.Saver(max_to_keep=1)
            return saver.save(self.sess, prefix)

    def restore(self, prefix: str) -> None:
        with self.graph.as_default():
            self.tf.train.Saver().restore(self.sess, prefix)

    def features(self, rgb: np.ndarray) -> np.ndarray:
        """H×W×128 float32 features of an H×W×3 uint8 RGB image."""
        padded = self.sess.run(self.padded, {self.rgb: rgb})
        out = np.squeeze(self.model.test(padded))
        p = self.PAD
        return out[p : out.shape[0] - p, p : out.shape[1] - p, :]
