"""The figures of runs, one module per figure (``[viz]`` extra); ``wtal_jax.tools.plotting`` is
their public face and writes them as PNG files.

* ``canvas``: matplotlib on the Agg canvas, colours, the atomic PNG writer, file names.
* ``run``: :class:`~wtal_jax.tools.plots.run.RunView`, a checkpoint with its test split.
* ``magnitudes``: feature magnitudes of action and background segments (the paper's Fig. 2),
  for methods whose outputs hold ``magnitudes``.
* ``timeline``: one video and class of one run: its segment score, shared sequences,
  proposals, detections and ground truth (one run's view of the paper's Fig. 4).
* ``compare``: one video and class of several runs on one time axis (the paper's Fig. 4).
* ``curves``: the losses a method logs and the evaluation mAPs, the selected step marked.

Every figure is drawn from what the method seam gives (``localization.VideoScores`` and the
outputs' names), never from a method's name.
"""
