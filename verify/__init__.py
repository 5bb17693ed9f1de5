"""neurospec ``verify``: prove properties of ReLU networks.

Submodules:
    verify.onnx_io  ONNX networks (e.g. the VNN-COMP 2021 benchmarks) as torch modules with hookable ReLUs
    verify.errors   the exception hierarchy
"""

__version__ = "0.1.0"
