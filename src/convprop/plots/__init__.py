"""Figures: error curves, activation shapes, feature and δ maps (matplotlib)."""
