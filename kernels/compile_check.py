"""Compile every CUDA kernel for each supported architecture with ``ptxas -v`` and tabulate
registers, spills and static shared memory per kernel; fail on a compile error, a warning or
any spill. ``--write`` also writes the table to kernels/COMPILE.md (committed).

    python kernels/compile_check.py [--write]

Runs in CI (.ci/run), which has nvcc but no GPU.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHS = (75, 80, 86, 89, 90)  #: Turing, A100, RTX 30xx/A10, L4/RTX 40xx/L40, H100/H200
HERE = Path(__file__).resolve().parent
ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\d+)'")
SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def compile_all() -> tuple[list[dict], str]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        sys.exit("nvcc not found: install the CUDA toolkit")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    release = re.search(r"release ([\d.]+)", version)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as out:
        for src in sorted(HERE.glob("*.cu")):
            for arch in ARCHS:
                cmd = [
                    nvcc, "-std=c++17", "-O3", f"-arch=sm_{arch}", "-cubin",
                    "--Werror", "all-warnings", "-Xptxas", "-v",
                    "-o", f"{out}/{src.stem}.sm_{arch}.cubin", str(src),
                ]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{src.name} sm_{arch} does not compile:\n{done.stderr}")
                current: dict | None = None
                for line in done.stderr.splitlines():
                    if m := ENTRY.search(line):
                        current = {"file": src.name, "kernel": m[1], "arch": int(m[2])}
                        rows.append(current)
                    elif current is not None and (m := SPILL.search(line)):
                        current.update(stack=int(m[1]), spill_st=int(m[2]), spill_ld=int(m[3]))
                    elif current is not None and (m := USED.search(line)):
                        current.update(registers=int(m[1]), smem=int(m[2] or 0))
    return rows, release[1] if release else "?"


def table(rows: list[dict], release: str) -> str:
    kernels = sorted({(r["file"], r["kernel"]) for r in rows})
    head = "| kernel | " + " | ".join(f"sm_{a}" for a in ARCHS) + " |"
    lines = [
        "# CUDA kernels: registers, spills, shared memory",
        "",
        f"`python kernels/compile_check.py --write` (nvcc {release}, `-O3`, `ptxas -v`). Each "
        "cell: registers / spill bytes (stores+loads) / static shared memory bytes. Dynamic "
        "shared memory (the row passes' tiles, (256 + 2r)·4 or 4·(256 + 2r)·4 bytes) comes on "
        "top, with an opt-in above 48 KB (sss_rt/postprocess/cuda.py).",
        "",
        head,
        "| --- " * (len(ARCHS) + 1) + "|",
    ]
    for file, kernel in kernels:
        cells = []
        for arch in ARCHS:
            r = next(x for x in rows if (x["file"], x["kernel"], x["arch"]) == (file, kernel, arch))
            cells.append(f"{r['registers']} / {r['spill_st'] + r['spill_ld']} / {r['smem']}")
        lines.append(f"| `{kernel}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    rows, release = compile_all()
    text = table(rows, release)
    print(text)
    spills = [r for r in rows if r["spill_st"] or r["spill_ld"] or r["stack"]]
    if spills:
        sys.exit(
            "spills or stack frames: " + ", ".join(f"{r['kernel']} sm_{r['arch']}" for r in spills)
        )
    if "--write" in sys.argv:
        (HERE / "COMPILE.md").write_text(text)
    print(f"ok: {len(rows)} kernel builds, no spills")


if __name__ == "__main__":
    main()
