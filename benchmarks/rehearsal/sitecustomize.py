"""The GPU check's rehearsal: make this Python look like the lent GPU machine's minimal image.

Put this folder on ``PYTHONPATH`` and the packages that image lacks (``SSS_RT_ABSENT``, default
below) fail to import, as they would there, so a rehearsal proves the check never needs them.
"""

import importlib.abc
import os
import sys

ABSENT = os.environ.get("SSS_RT_ABSENT", "cv2 scipy skimage openvino PIL tqdm").split()


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU image)")
        return None


sys.meta_path.insert(0, _Absent())
