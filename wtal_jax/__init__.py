"""wtal_jax: weakly-supervised temporal action localisation, UM (uncertainty modelling) and
BaS-Net, in JAX.

Data flow, one module per stage, grouped in packages (docs/architecture.md):
  features -> ``data.dataset`` / ``data.sampling`` / ``data.pipeline`` -> the method
  (``method.NAME``: its network, selection and losses) -> ``training`` (the step);
  the method's scores (``postprocess.inference``) -> ``postprocess.localization`` (proposals,
  NMS) -> ``postprocess.average_precision`` (mAP) and ``postprocess.report``; ``runs`` holds the
  run directory and the training loop, ``tools`` what is built on runs, ``cli`` the command.
``data`` and ``postprocess`` but for ``inference`` and ``evaluator`` are plain NumPy.
"""

__version__ = '0.1.0'
