"""Runs: the run directory with its orbax checkpoints, and the training loop around the step."""
