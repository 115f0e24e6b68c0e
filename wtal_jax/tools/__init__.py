"""Tools built on runs: benchmarks (``bench``, ``bench_suite``), comparisons over paired seeds
(``compare``), grids of settings (``sweep``, ``ablation``), a run at a glance (``show``), figures
(``plotting``, ``plots``) and PyTorch checkpoints (``torch_convert``)."""
