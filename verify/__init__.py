"""neurospec ``verify``: prove properties of ReLU networks with a MILP backend (PuLP: CBC or HiGHS).

Example:
    >>> import verify
    >>> from verify.network import ReluNetwork
    >>> from verify.vnnlib import read_vnnlib
    >>> net = ReluNetwork.from_onnx("mnist-net_256x2.onnx")                     # doctest: +SKIP
    >>> spec = read_vnnlib("prop_0_0.03.vnnlib", net.n_inputs, net.n_outputs)   # doctest: +SKIP
    >>> verify.verify(net, spec, solver="cbc", timeout=120).vnncomp             # doctest: +SKIP
    >>> opts = verify.VerifyOptions(solver="highs", timeout=120)                 # doctest: +SKIP
    >>> verify.verify(net, spec, options=opts).save("results/prop_0")           # doctest: +SKIP
    >>> print(verify.certify(net, "mnist", eps=[0.02, 0.05], limit=100, workers=2))  # doctest: +SKIP

Modules:
    verify.network     ReluNetwork: affine layers and ReLUs extracted from torch or ONNX models
    verify.bounds      interval and CROWN pre-activation bounds
    verify.milp        big-M MILP encoding through PuLP
    verify.solvers     solver choice and status mapping (CBC, HiGHS)
    verify.properties  the Spec type: robustness, NAP robustness, NAP non-ambiguity
    verify.vnnlib      VNN-LIB reader
    verify.api         verify() (a list of phases), VerifyOptions, NAP robustness and non-ambiguity
    verify.result      VerificationResult (save/load) and VNN-COMP result strings
    verify.batch       instances and results CSVs of `neurospec verify-batch` (verify.cli runs them)
    verify.certify     certify(): certified robust accuracy (clean, PGD, verified) of a classifier per eps
    verify.distributed Ray tasks: verify-batch instances, NAP robustness/non-ambiguity queries in parallel
    probe.graph.onnx     ONNX networks as torch modules
"""

from verify.api import VerifyOptions, nap_ambiguity, nap_robustness, verify
from verify.certify import CertifyReport, certify

__all__ = ["CertifyReport", "VerifyOptions", "certify", "nap_ambiguity", "nap_robustness", "verify"]
__version__ = "0.1.0"
