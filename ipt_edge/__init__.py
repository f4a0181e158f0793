"""ipt-edge runtime: run instance-wise prompt-tuned classifiers with ONNX Runtime, no torch."""

__version__ = "0.1.0"
