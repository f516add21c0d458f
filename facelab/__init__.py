"""facelab: the DeepFaceLab workflow on PyTorch, headless and crash-safe."""

__version__ = "0.1.0"
