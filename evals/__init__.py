"""Offline evals of intent parsing: python -m evals."""
