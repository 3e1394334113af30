"""CUDA kernel sources (``*.cu``) for GPU post-processing, installed as package data.

This version ships no kernels yet: post-processing runs on the CPU.
"""
