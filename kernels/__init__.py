"""Hand-written compute kernels, installed as ``sss_rt.kernels``.

``cpu_guided_filter.c`` (with ``cpu_guided_filter_impl.h``) is the compiled CPU extension
``_cpu_guided_filter``, built at install time and driven by ``sss_rt.native``;
``cpu_segmentation.c`` is ``_cpu_segmentation`` (the soft segmentation's sparse triangular
solves and weighted Grams), driven by ``sss_rt.segmentation.native``;
``guided_filter.cu`` holds the CUDA kernels of the GPU post-processing, package data compiled by
pycuda at run time (``sss_rt.postprocess.cuda``).
"""
