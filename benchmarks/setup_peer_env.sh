#!/usr/bin/env bash
# The peer post-processing needs opencv-contrib, which conflicts with the project's opencv:
# it gets its own venv (default .venv-peer).
set -euo pipefail
dest="${1:-.venv-peer}"
python3 -m venv "$dest"
"$dest/bin/python" -m pip install -q --upgrade pip
"$dest/bin/python" -m pip install -q opencv-contrib-python-headless numpy
echo "$dest/bin/python"
