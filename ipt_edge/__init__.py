"""ipt-edge runtime: run instance-wise prompt-tuned classifiers with ONNX Runtime, no torch."""

from ipt_edge.bundle import Bundle, Predictions
from ipt_edge.classifier import Classification, Classifier
from ipt_edge.errors import BundleError
from ipt_edge.sessions import ProviderError
from ipt_edge.tokenizer import TextError

__version__ = "0.1.0"
__all__ = [
    "Bundle",
    "BundleError",
    "Classification",
    "Classifier",
    "Predictions",
    "ProviderError",
    "TextError",
    "__version__",
]
