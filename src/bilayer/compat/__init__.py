"""Compatibility with the authors released code: checkpoint conversion and numerical parity."""
