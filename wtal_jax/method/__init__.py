"""The method seam: what a weakly-supervised localisation method gives the rest of ``wtal_jax``.

A method is one folder (or one file of a user's) defining ``METHOD``, a :class:`Method` of plain
functions. The training loop, seeds, devices, checkpoints, the evaluator, every protocol,
``detect``, the figures and the benchmarks call only these; what every method shares stays
generic (runs above thresholds, the outer-inner contrast, NMS, seconds: ``postprocess``).

The data flow of one method, for B videos of T segments, D features and C classes:

  ``segments``  the network on one sequence (T, D) -> per-segment outputs {name: (T, ...)};
                with a ``key`` it is the training pass (dropout, the method's own randomness).
                Inference runs it on packed chunks of many videos, so a network wider than one
                segment must zero what lies outside ``valid`` between its layers.
  ``videos``    per-segment outputs of B videos {name: (B, T, ...)} and their lengths ->
                everything the losses and the localisation need {name: (B, ...)}: selection,
                video-level scores.
  ``losses``    those outputs and the labels (B, C) -> per-video losses {name: (B,)}, with
                ``'loss'`` the one minimised; every name is logged and drawn.
  ``scores``    one video's outputs as NumPy -> :class:`~wtal_jax.postprocess.localization.
                VideoScores`: the classes to localise, their segment scores and any extra
                proposal family.

``hp``, the last argument of each, is the run's whole config, frozen (hashable: a static of the
compiled functions). Built-in methods: ``um`` (the seed paper) and ``basnet`` (its Fig. 4
comparison). ``config.method`` selects one by name, by module path (``my_pkg.my_method``) or by
file (``my_method.py``); see docs/adding-a-method.md.
"""

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from wtal_jax.errors import UserError

BUILT_IN = {'um': 'wtal_jax.method.um', 'basnet': 'wtal_jax.method.basnet'}
FUNCTIONS = ('model', 'segments', 'videos', 'losses', 'scores')


class TorchLayout(NamedTuple):
    """A method's PyTorch release state dict, for ``convert-torch`` and ``export-torch``;
    NumPy only (the conversion imports PyTorch, not the method).

    Attributes:
      keys: the release's state-dict keys, in its order.
      shapes: ``(cfg, num_classes) -> {key: ((what sets the size, size), ...)}``, one pair per
        axis of each tensor: checked against a file, the names make its error message.
      to_params: ``{key: float32 ndarray of the checked shape} -> params`` (NumPy leaves).
      to_arrays: ``params -> {key: float32 ndarray}``, the inverse, exact for float32.
    """
    keys: tuple[str, ...]
    shapes: Callable
    to_params: Callable
    to_arrays: Callable


class Method(NamedTuple):
    """A method, as plain functions (see the module's docstring for their data flow).

    Attributes:
      name: short name, e.g. 'um'.
      config: its config sections, ``{section: {field: Field(default, rule)}}``: its own fields
        of ``model``, ``loss`` and ``localize`` (defaults and rules in one place).
      defaults: its release's values of fields every method shares, by dotted key (e.g.
        ``{'localize.nms_iou': 0.7}``); the others keep the common defaults.
      model: ``(cfg, num_classes) -> flax.linen.Module``.
      segments: ``(module, params, x (T, D), *, hp, key=None, valid=None) -> {name: (T, ...)}``.
      videos: ``(segments {name: (B, T, ...)}, *, hp, lengths=None) -> {name: (B, ...)}``;
        ``lengths`` (B,) are the true lengths of padded videos (None: all T).
      losses: ``(outputs, labels (B, C), *, hp) -> {name: (B,)}`` holding ``'loss'``.
      scores: ``(video: VideoOutput, *, hp) -> VideoScores``, NumPy.
      torch: the release's state-dict layout, or None where there is no release.
    """
    name: str
    config: Mapping[str, Mapping[str, Any]]
    defaults: Mapping[str, Any]
    model: Callable
    segments: Callable
    videos: Callable
    losses: Callable
    scores: Callable
    torch: TorchLayout | None = None


def _from_file(path: str):
    """Runs a user's method file (it is code, like a config file) and returns its module."""
    if not os.path.isfile(path):
        raise UserError(f'method {path}: no such file')
    name = 'wtal_jax_user_method_' + str(abs(hash(os.path.abspath(path))))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file: say where, in one line
        del sys.modules[name]
        raise UserError(f'method {path}: cannot load: {type(e).__name__}: {e}') from e
    return module


def _module(spec: str):
    if spec in BUILT_IN:
        return importlib.import_module(BUILT_IN[spec])
    if spec.endswith('.py'):
        return _from_file(spec)
    try:
        return importlib.import_module(spec)
    except ImportError as e:
        raise UserError(f'unknown method {spec!r}: not one of {", ".join(BUILT_IN)}, nor an '
                        f'importable module ({e}), nor a .py file') from None


def load(spec: str) -> Method:
    """The method that ``config.method`` names: a built-in name, a module path or a .py file.

    Raises:
      UserError: no such method, or its ``METHOD`` is not a complete :class:`Method` (one line
        naming what is missing).
    """
    module = _module(spec)
    method = getattr(module, 'METHOD', None)
    if method is None:
        raise UserError(f'method {spec}: defines no METHOD (a wtal_jax.method.Method)')
    if not isinstance(method, Method):
        raise UserError(f'method {spec}: METHOD is a {type(method).__name__}, not a '
                        'wtal_jax.method.Method')
    missing = [f for f in FUNCTIONS if not callable(getattr(method, f))]
    if missing:
        raise UserError(f'method {spec}: METHOD.{", METHOD.".join(missing)} '
                        f'{"is" if len(missing) == 1 else "are"} not a function')
    return method
