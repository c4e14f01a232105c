"""Deployable artefacts stored at the bit-widths the campaign chose (low-bit ONNX, …)."""
