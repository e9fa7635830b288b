"""Reproducible experiments: the paper's ablation tables."""
