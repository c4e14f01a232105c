"""Deployable artefacts of a selected student (low-bit ONNX, standalone Hugging Face folder)."""
