"""neurospec ``codebook``: codebook (VQ) bottlenecks inside TransformerLens models.

Capabilities arrive as their issues land; see README.md.
"""

__version__ = "0.1.0"
