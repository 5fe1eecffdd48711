"""Shared building blocks: the pre-activation residual block, adaptive layers, spectral norm."""
