"""ipt-edge runtime: run instance-wise prompt-tuned classifiers with ONNX Runtime, no torch."""

from ipt_edge.bundle import Bundle, Predictions
from ipt_edge.classifier import Classification, Classifier
from ipt_edge.errors import BundleError
from ipt_edge.sessions import ProviderError

__version__ = "0.1.0"
__all__ = [
    "Bundle",
    "BundleError",
    "Classification",
    "Classifier",
    "Predictions",
    "ProviderError",
    "__version__",
]
