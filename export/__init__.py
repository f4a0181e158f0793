"""ipt-edge export side: training and ONNX export on PyTorch (imports torch)."""
