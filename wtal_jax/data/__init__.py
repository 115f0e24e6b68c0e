"""Data: annotation and feature files, temporal sampling, training batches, synthetic data sets.

NumPy only (no JAX): ``dataset`` reads and validates a split, ``sampling`` picks the T segments
of a video, ``pipeline`` builds training batches as a pure function of (seed, step),
``splits`` reads the splits of a config, ``holdout`` the selection split, ``prepare`` turns
public releases into the layout, and ``synthetic`` generates the embedded data set.
"""
