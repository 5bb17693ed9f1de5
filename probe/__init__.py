"""neurospec ``probe``: the foundation of the toolkit, and the analyses that look inside networks.

Foundation (``verify`` and ``codebook`` build on these public names):
    probe.core        errors, artifacts (safetensors + JSON, one version stamp), paths, validation, device,
                      the training-loop pieces
    probe.data        MNIST, CIFAR-10, ERAN's CSVs, scikit-learn digits, the TokFSM language
    probe.zoo         every model you can name and load: reference models, VNN-COMP networks, TokFSM models
    probe.graph       a user's model as the toolkit sees it: ONNX import, ReLU sites, FFN sites
    probe.cli         the ``neurospec`` command line (one module per command group)

Analyses (one function starts each):
    probe.nap         neural activation patterns: ``probe.nap.mine(model, loader)``
    probe.moe         emergent mixture-of-experts: ``probe.moe.detect(model, loader, n_experts=...)``
    probe.complexity  feature complexity by iterative feature merging: ``probe.complexity.measure(model)``

Nothing heavy is imported at package import time.
"""

__version__ = "0.1.0"
