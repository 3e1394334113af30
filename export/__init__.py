"""Build steps: the inference form of the network, ONNX export and TensorRT engine building.

This folder is installed as the ``sss_rt.export`` subpackage. Its modules import torch (ONNX
export) or tensorrt (engine building) lazily, when called.
"""
