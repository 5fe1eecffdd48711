"""Evaluation: complexity accounting (complexity.py), image metrics (metrics.py, lpips.py, arcface.py, nme.py), the
metric registry (registry.py) and the paper's test protocol behind ``bilayer evaluate`` (evaluate.py, cli.py)."""
