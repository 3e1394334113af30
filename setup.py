"""Build of the compiled CPU kernel; everything else is declared in pyproject.toml."""

import sys

from setuptools import Extension, setup

# -fno-trapping-math: selects between computed values vectorize (no value changes; sss-rt never
# reads the floating-point exception flags)
CFLAGS = (
    []
    if sys.platform == "win32"
    else ["-O3", "-std=c99", "-ffp-contract=fast", "-fno-trapping-math"]
)

setup(
    ext_modules=[
        Extension(
            "sss_rt.kernels._cpu_guided_filter",
            sources=["kernels/cpu_guided_filter.c"],
            depends=[
                "kernels/cpu_guided_filter_impl.h",
                "kernels/cpu_head_bf16.h",
                "kernels/buffer_args.h",
            ],
            extra_compile_args=CFLAGS,
            # without a C compiler the package still installs and uses the NumPy path
            optional=True,
        ),
        Extension(
            "sss_rt.kernels._cpu_segmentation",
            sources=["kernels/cpu_segmentation.c"],
            depends=["kernels/buffer_args.h"],
            extra_compile_args=CFLAGS,
            libraries=[] if sys.platform == "win32" else ["m"],  # fmaf
            optional=True,
        ),
    ]
)
