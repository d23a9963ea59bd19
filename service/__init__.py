"""HTTP inference service: serves one exported ONNX model with micro-batching, on onnxruntime only."""
