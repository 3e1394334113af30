"""The GPU check's rehearsal: make this Python look like the lent GPU machine's minimal image.

Put this folder on ``PYTHONPATH`` and the packages that image lacks (``SSS_RT_ABSENT``, default
below) are absent as they would be there: importing one fails with ``ModuleNotFoundError`` and
``importlib.util.find_spec`` finds nothing, so a rehearsal proves the check never needs them.
"""

import importlib.abc
import importlib.util
import os
import sys

ABSENT = os.environ.get("SSS_RT_ABSENT", "cv2 scipy skimage openvino PIL tqdm").split()


def _absent(name: str) -> bool:
    return name.split(".")[0] in ABSENT


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _absent(name):
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU image)")
        return None


_find_spec = importlib.util.find_spec


def _find_spec_unless_absent(name, package=None):
    return None if _absent(name) else _find_spec(name, package)


sys.meta_path.insert(0, _Absent())
importlib.util.find_spec = _find_spec_unless_absent
