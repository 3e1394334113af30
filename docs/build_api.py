"""Build the API reference (docs/api/) from the public API's numpydoc docstrings with pdoc.

python docs/build_api.py           # write docs/api/
python docs/build_api.py --check   # CI: fail if docs/api/ is not what the code makes
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

#: the public API's modules: the pages of the reference (ruff checks their docstrings, D rules)
MODULES = (
    "sss_rt",
    "sss_rt.extractor",
    "sss_rt.segmentation.segmenter",
    "sss_rt.backends",
    "sss_rt.backends.support",
    "sss_rt.bands",
    "sss_rt.device",
    "sss_rt.export.import_authors",
    "sss_rt.export.quantize",
)
OUT = Path(__file__).resolve().parent / "api"


def build(out: Path) -> None:
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="numpy", search=False, show_source=False)
    pdoc.pdoc(*MODULES, output_directory=out)


def _differs(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b)
    out = [f"{a / n}" for n in cmp.left_only + cmp.right_only + cmp.diff_files]
    for sub in cmp.common_dirs:
        out += _differs(a / sub, b / sub)
    return out


def main(argv: list[str]) -> int:
    if "--check" not in argv:
        build(OUT)
        print(f"wrote {OUT}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        stale = _differs(OUT, Path(tmp)) if OUT.is_dir() else [str(OUT)]
    if stale:
        print("docs/api is stale: run python docs/build_api.py\n  " + "\n  ".join(stale))
        return 1
    print("docs/api is current")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
