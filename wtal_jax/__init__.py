"""wtal_jax: weakly-supervised temporal action localisation by uncertainty modelling, in JAX.

Data flow, one module per stage:
  features -> ``data`` / ``sampling`` -> ``models`` -> ``selection`` -> ``losses`` -> ``train``;
  scores -> ``localization`` (proposals, NMS) -> ``evaluation`` (mAP).
``localization`` and ``evaluation`` are plain NumPy and never import JAX.
"""

__version__ = '0.1.0'
