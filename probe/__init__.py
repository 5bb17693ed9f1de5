"""neurospec ``probe``: look inside trained neural networks.

Submodules:
    probe.data      real data sets (MNIST, CIFAR-10, ERAN CSVs, scikit-learn digits) from standard on-disk layouts
    probe.models    reference ReLU models (MNIST MLP/CNN, CIFAR-10 CNN) with a deterministic train-and-cache helper
    probe.complexity  feature complexity by iterative feature merging (merged, narrower models)
    probe.errors    the exception hierarchy
    probe.moe       emergent mixture-of-experts in FFN layers: partitions, routers, MoE form, modularity metrics

Nothing heavy is imported at package import time.
"""

__version__ = "0.1.0"
