"""Write pycuda's build configuration for this machine, so its sdist builds (GPU check step 1).

pycuda's ``aksetup_helper`` takes its configuration from ``siteconf.py`` in the source tree,
``~/.aksetup-defaults.py`` or ``/etc/aksetup-defaults.py``; the environment's ``CUDA_ROOT`` is
not read. Without a file it guesses the toolkit as the parent of the first ``nvcc`` on PATH (a
wrapper script in ``/usr/local/bin`` on some images: ``/usr/local/include`` has no ``cuda.h``),
builds cuRAND support (``curand.h`` may be absent, and nothing here uses it) and links ``-lcuda``
from the toolkit's library folders (``libcuda.so`` lives with the driver, often only as
``libcuda.so.1``). This writes every one of those explicitly:

- ``CUDA_ROOT``: the toolkit that really holds ``include/cuda.h`` — from ``CUDA_HOME`` /
  ``CUDA_PATH`` / ``CUDA_ROOT``, the ``TOP`` nvcc itself reports (``nvcc -v --dryrun``, which
  sees through wrapper scripts), nvcc's resolved path, or ``/usr/local/cuda``;
- ``CUDA_ENABLE_CURAND = False``, ``CUDA_ENABLE_GL = False``;
- ``CUDADRV_LIB_DIR``: a folder with ``libcuda.so`` for the linker — the driver's folder
  (``ldconfig -p``, the usual system folders), the toolkit's ``stubs``, or, where only
  ``libcuda.so.1`` exists, a folder made with a ``libcuda.so`` link to it.

Usage: ``python benchmarks/pycuda_siteconf.py --output ~/.aksetup-defaults.py`` (exit 1 with one
line when no toolkit or no driver library is found).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

#: pycuda's option names this file writes (pycuda 2026.1's setup.py get_config_schema)
OPTIONS = (
    "CUDA_ROOT",
    "CUDA_INC_DIR",
    "CUDA_ENABLE_CURAND",
    "CUDA_ENABLE_GL",
    "CUDADRV_LIB_DIR",
    "CUDADRV_LIBNAME",
    "CUDART_LIB_DIR",
    "USE_SHIPPED_BOOST",
)
SYSTEM_LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
    "/usr/lib/wsl/lib",
)


class NotFound(RuntimeError):
    pass


def _has_cuda_h(root: Path) -> bool:
    return (root / "include" / "cuda.h").is_file()


def nvcc_top(nvcc: str) -> Path | None:
    """The toolkit root nvcc reports for itself (``#$ TOP=…`` of a dry run)."""
    try:
        done = subprocess.run(
            [nvcc, "-v", "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", done.stdout + done.stderr, re.MULTILINE)
    return Path(os.path.normpath(m.group(1).strip())) if m else None


def cuda_root(
    env: Mapping[str, str] = os.environ,
    nvcc: str | None = None,
    fallbacks: tuple[str, ...] = ("/usr/local/cuda",),
) -> Path:
    """The CUDA toolkit folder that holds ``include/cuda.h``."""
    candidates: list[Path] = [
        Path(env[k]) for k in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT") if env.get(k)
    ]
    nvcc = nvcc or shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        top = nvcc_top(nvcc)
        if top is not None:
            candidates.append(top)
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent)
    candidates += [Path(f) for f in fallbacks]
    for c in candidates:
        if _has_cuda_h(c):
            return Path(os.path.realpath(c))
    tried = ", ".join(str(c) for c in candidates)
    raise NotFound(f"no CUDA toolkit with include/cuda.h (tried {tried})")


def _ldconfig_dirs() -> list[Path]:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [Path(m.group(1)).parent for m in re.finditer(r"libcuda\.so(?:\.1)? .*=> (\S+)", out)]


def driver_lib_dir(root: Path, link_dir: Path, search: list[Path] | None = None) -> Path:
    """A folder whose ``libcuda.so`` the linker can take (made in ``link_dir`` when only
    ``libcuda.so.1`` exists)."""
    dirs = list(search) if search is not None else [*_ldconfig_dirs(), *map(Path, SYSTEM_LIB_DIRS)]
    stubs = [root / "lib64" / "stubs", root / "lib" / "stubs"]
    stubs += [Path(p) for p in sorted(glob.glob(str(root / "targets" / "*" / "lib" / "stubs")))]
    for d in dirs:  # the driver's own library first: what runs is what links
        if (d / "libcuda.so").exists():
            return d
    for d in dirs:
        if (d / "libcuda.so.1").exists():
            link_dir.mkdir(parents=True, exist_ok=True)
            link = link_dir / "libcuda.so"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to((d / "libcuda.so.1").resolve())
            return link_dir
    for d in stubs:
        if (d / "libcuda.so").exists():
            return d
    raise NotFound("no libcuda.so or libcuda.so.1 (the NVIDIA driver) and no toolkit stubs")


def config(root: Path, driver_dir: Path) -> dict[str, object]:
    lib = root / "lib64" if (root / "lib64").is_dir() else root / "lib"
    return {
        "CUDA_ROOT": str(root),
        "CUDA_INC_DIR": [str(root / "include")],
        "CUDA_ENABLE_CURAND": False,
        "CUDA_ENABLE_GL": False,
        "CUDADRV_LIB_DIR": [str(driver_dir)],
        "CUDADRV_LIBNAME": ["cuda"],
        "CUDART_LIB_DIR": [str(lib)],
        "USE_SHIPPED_BOOST": True,
    }


def render(conf: Mapping[str, object]) -> str:
    """The file aksetup reads: Python assignments."""
    return "".join(f"{k} = {v!r}\n" for k, v in conf.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path.home() / ".aksetup-defaults.py")
    ap.add_argument("--link-dir", type=Path, default=Path("/tmp/sss-rt-libcuda"))
    args = ap.parse_args(argv)
    try:
        root = cuda_root()
        conf = config(root, driver_lib_dir(root, args.link_dir))
    except NotFound as exc:
        print(f"pycuda_siteconf: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(conf))
    print(f"wrote {args.output}: " + ", ".join(f"{k}={v}" for k, v in conf.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
