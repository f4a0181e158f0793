"""ipt-edge runtime: run instance-wise prompt-tuned classifiers with ONNX Runtime, no torch."""

from ipt_edge.bundle import BundleError
from ipt_edge.classifier import Classifier
from ipt_edge.sessions import ProviderError

__version__ = "0.1.0"
__all__ = ["BundleError", "Classifier", "ProviderError", "__version__"]
