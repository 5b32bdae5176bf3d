"""qdarts: differentiable quantization-aware architecture search (∇QDARTS) for tinyML.

The method and the product surface: config, data, supernet, search loop, derivation, QAT
fine-tuning, export, report and CLI. Submodules import JAX; this package root does not, so
`qdarts --help` stays instant.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
