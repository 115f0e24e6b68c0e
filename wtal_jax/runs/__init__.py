"""Runs: the run directory (``rundir``, its log ``metrics_log``, its checkpoints
``checkpoints``), the training loop around the step (``loop``, ``memory``, ``distributed``,
``tensorboard``), the report over seeds (``summary``), and a run's checkpoint applied
(``evaluate``, ``detect``)."""
