"""Deployable artefacts of a selected student: low-bit ONNX at the campaign's bit-widths, and parity checks of every shipped file."""
