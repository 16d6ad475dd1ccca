"""Comparison of the layers of one case: predicted, configured (QMP), observed (guest)."""
