"""Semantic Soft Segmentation (Aksoy et al. 2018) from the semantic features: soft layers of
alpha mattes that sum to one.

The stages, each in its own module, in the order they run (:class:`SoftSegmenter` drives them):

- ``superpixels.py``  SLIC-zero superpixels, their 8-connected adjacency, centroids and means
- ``affinity.py``     the matting Laplacian and the semantic and non-local colour affinities,
                      summed into one sparse Laplacian L = D − W
- ``eigen.py``        the eigenvectors of L whose eigenvalues are smallest in magnitude
- ``sparsify.py``     constrained sparsification in the eigenvector basis (IRLS), grouping into
                      layers, relaxed sparsification at pixel level (IRLS + conjugate gradients)
- ``gradient.py``     Farid–Simoncelli 13-tap derivative filters (the per-pixel sparsity
                      exponent)
- ``segmenter.py``    SoftSegmenter / segment: features → layers
- ``native.py``       the compiled kernels' driver (``kernels/cpu_segmentation.c``): solves with
                      SuperLU's factors, the sparsification's weighted Grams
"""

from sss_rt.segmentation.segmenter import SegmentConfig, SoftSegmentation, SoftSegmenter, segment

__all__ = ["SegmentConfig", "SoftSegmentation", "SoftSegmenter", "segment"]
