"""wtal_jax: weakly-supervised temporal action localisation by uncertainty modelling, in JAX.

Data flow, one module per stage, grouped in packages:
  features -> ``data.dataset`` / ``data.sampling`` / ``data.pipeline`` -> ``method.models`` ->
  ``method.selection`` -> ``method.losses`` -> ``method.train`` (the step);
  scores (``postprocess.inference``) -> ``postprocess.localization`` (proposals, NMS) ->
  ``postprocess.evaluation`` (mAP); ``runs`` holds the run directory and the training loop.
``data``, ``postprocess.localization`` and ``postprocess.evaluation`` are plain NumPy.
"""

__version__ = '0.1.0'
