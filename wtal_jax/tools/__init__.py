"""Tools around a run: benchmarks, PyTorch checkpoint conversion, figures and ablations."""
