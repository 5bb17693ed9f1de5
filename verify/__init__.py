"""neurospec ``verify``: prove properties of ReLU networks with a MILP backend (PuLP: CBC or HiGHS).

Example:
    >>> import verify
    >>> from verify.network import ReluNetwork
    >>> from verify.vnnlib import read_vnnlib
    >>> net = ReluNetwork.from_onnx("mnist-net_256x2.onnx")                     # doctest: +SKIP
    >>> spec = read_vnnlib("prop_0_0.03.vnnlib", net.n_inputs, net.n_outputs)   # doctest: +SKIP
    >>> verify.verify(net, spec, solver="cbc", timeout=120).vnncomp             # doctest: +SKIP

Modules:
    verify.network     ReluNetwork: affine layers and ReLUs extracted from torch or ONNX models
    verify.bounds      interval and CROWN pre-activation bounds
    verify.milp        big-M MILP encoding through PuLP
    verify.solvers     solver choice and status mapping (CBC, HiGHS)
    verify.properties  the Spec type: robustness, NAP robustness, NAP non-ambiguity
    verify.vnnlib      VNN-LIB reader
    verify.result      VerificationResult and VNN-COMP result strings
    probe.graph.onnx     ONNX networks as torch modules
"""

from verify.api import nap_ambiguity, nap_robustness, verify

__all__ = ["nap_ambiguity", "nap_robustness", "verify"]
__version__ = "0.1.0"
