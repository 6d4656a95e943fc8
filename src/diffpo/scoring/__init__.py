"""Scoring samples: learned scorers, stand-ins, ground truth, diversity."""
