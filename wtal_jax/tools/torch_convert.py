"""PyTorch interop: a method's release ``state_dict`` <-> this project's Flax parameters.

``wtal-jax convert-torch MODEL.pkl --config CFG --workdir DIR`` turns a model saved by the
authors' PyTorch release (``torch.save(net.state_dict(), ...)``) into a run directory that
``evaluate``, ``detect`` and ``train --config.train.init_from=DIR`` accept;
``wtal-jax export-torch --workdir DIR OUT.pkl`` writes a run's parameters back in that layout.
Each method gives its release's layout (``METHOD.torch``: keys, shapes, the two conversions;
UM's in ``wtal_jax/method/um/torch_layout.py``); reading, checking and writing files is here, for
every method. The class axis follows the config's class list (THUMOS'14: the fixed order of
SPEC §1, the releases' own).

PyTorch is the optional extra ``[torch]``; it is imported only inside the functions that need it,
so importing ``wtal_jax`` or running any other command never imports it. Files are read with
``torch.load(..., weights_only=True)``: tensors and plain containers only, never arbitrary
pickled code.
"""

import collections
import os
import re
import shutil
import zipfile
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from wtal_jax.errors import UserError
from wtal_jax.io_utils import check_output_path, write_atomic

# A training checkpoint may wrap the state dict: {'state_dict': ..., 'epoch': ...}.
WRAPPER_KEYS = ('state_dict', 'model')
# nn.DataParallel saves every key with this prefix.
DATA_PARALLEL_PREFIX = 'module.'

_INSTALL_HINT = ("install the extra: pip install -e '.[torch]' (docs/pytorch-model.md says how "
                 "to get PyTorch's CPU build)")


# ---------------------------------------------------------------------------------------------
# Reading a PyTorch file

def _import_torch():
    try:
        import torch
    except ImportError:
        raise UserError(f'PyTorch is not installed; {_INSTALL_HINT}') from None
    return torch


def _sniff(path: str) -> str:
    """What the file's first bytes say it is: 'zip', 'pickle', 'npy', 'empty' or 'other'."""
    with open(path, 'rb') as f:
        head = f.read(8)
    if not head:
        return 'empty'
    if head.startswith(b'\x93NUMPY'):
        return 'npy'
    if head.startswith(b'PK'):
        return 'zip'
    if head[0] == 0x80:  # pickle PROTO opcode: torch's legacy format, or a plain pickle
        return 'pickle'
    return 'other'


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else ''
    first = first if len(first) <= 160 else first[:157] + '...'
    return f'{type(error).__name__}: {first}'.rstrip(': ')


def load_torch_file(path: str):
    """Whatever ``torch.load(path, map_location='cpu', weights_only=True)`` gives.

    Raises UserError, one line, for a missing file and for anything that is not a PyTorch
    checkpoint loadable without executing code.
    """
    if not os.path.exists(path):
        raise UserError(f'{path}: file not found (expected a PyTorch state_dict saved with '
                        'torch.save)')
    if os.path.isdir(path):
        raise UserError(f'{path}: is a directory, expected a PyTorch state_dict file')
    kind = _sniff(path)
    expected = 'expected a PyTorch state_dict saved with torch.save'
    if kind == 'empty':
        raise UserError(f'{path}: empty file; {expected}')
    if kind == 'npy':
        raise UserError(f'{path}: a NumPy .npy array, not a PyTorch checkpoint; {expected}')
    if kind == 'other':
        raise UserError(f'{path}: not a PyTorch checkpoint (neither the zip archive nor the '
                        f'pickle that torch.save writes); {expected}')
    if kind == 'zip':
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            raise UserError(f'{path}: a truncated or corrupt zip archive; {expected}') from None
        if not any(name.endswith('/data.pkl') for name in names):
            raise UserError(f'{path}: a zip archive without data.pkl (e.g. a NumPy .npz), not a '
                            f'PyTorch checkpoint; {expected}')
    torch = _import_torch()
    import pickle
    import warnings
    try:
        with warnings.catch_warnings():
            # e.g. 'Detected pickle protocol 4': our own messages below say what is wrong.
            warnings.simplefilter('ignore')
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
        if refused:
            raise UserError(
                f'{path}: refused by torch.load(weights_only=True): it would import '
                f'{refused.group(1)}, and wtal_jax never runs pickled code; re-save only the '
                'tensors: torch.save(model.state_dict(), path)') from None
        if kind == 'pickle' and 'Unsupported operand' in str(e):
            raise UserError(f'{path}: a Python pickle that torch.save did not write (or that '
                            f'holds more than tensors and containers); {expected}') from None
        raise UserError(f'{path}: cannot read as a PyTorch checkpoint ({_first_line(e)})') \
            from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError... on broken files
        raise UserError(f'{path}: cannot read as a PyTorch checkpoint ({_first_line(e)})') \
            from None


def _describe(obj) -> str:
    if isinstance(obj, (list, tuple)):
        return f'a {type(obj).__name__} of {len(obj)} items'
    if hasattr(obj, 'shape') and hasattr(obj, 'dtype'):
        return f'a single {type(obj).__name__} of shape {tuple(obj.shape)}'
    return f'a {type(obj).__module__}.{type(obj).__qualname__}'.replace('builtins.', '')


def _listing(keys, limit: int = 6) -> str:
    keys = [str(k) for k in keys]
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def unwrap_state_dict(obj, *, source: str = 'state dict') -> Mapping:
    """The parameter mapping inside a loaded file.

    Accepts a bare state dict; a dict wrapping one under 'state_dict' or 'model' (a training
    checkpoint with epochs, optimiser state...); and ``nn.DataParallel``'s 'module.' prefix.
    """
    if not isinstance(obj, Mapping):
        raise UserError(f'{source}: expected a state dict (a dict of parameter names to '
                        f'tensors), found {_describe(obj)}')
    if not any(_is_tensor(value) for value in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if obj and all(isinstance(k, str) and k.startswith(DATA_PARALLEL_PREFIX) for k in obj):
        obj = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------------
# The conversions

def _to_float32(key: str, value, source: str) -> np.ndarray:
    """A torch tensor or NumPy array as float32 NumPy (exact for float32 input)."""
    if type(value).__module__.startswith('torch') and hasattr(value, 'detach'):
        if not value.is_floating_point():
            raise UserError(f'{source}: {key} has dtype {value.dtype}, expected floating point')
        return value.detach().cpu().float().numpy().copy()
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.floating):
            raise UserError(f'{source}: {key} has dtype {value.dtype}, expected floating point')
        return np.array(value, np.float32)
    raise UserError(f'{source}: {key} is {_describe(value)}, expected a tensor')


def _is_tensor(value) -> bool:
    return hasattr(value, 'shape') and hasattr(value, 'dtype')


def layout(cfg):
    """The release layout of ``cfg``'s method (``METHOD.torch``)."""
    from wtal_jax import method
    found = method.load(cfg.method)
    if found.torch is None:
        raise UserError(f'method {cfg.method} has no PyTorch release layout (METHOD.torch)')
    return found


def _whose(keys) -> str:
    """' (it holds the NAME release\'s parameters: use a NAME config)' when ``keys`` are exactly
    another built-in method's."""
    from wtal_jax import method
    for name in method.BUILT_IN:
        other = method.load(name).torch
        if other is not None and set(keys) == set(other.keys):
            return f' (its keys are the {name} release\'s: use a config with method={name})'
    return ''


def _check_keys(state_dict: Mapping, keys: tuple, name: str, source: str) -> None:
    missing = [k for k in keys if k not in state_dict]
    extra = [k for k in state_dict if k not in keys]
    if missing or extra:
        found = '; '.join(part for part in (
            f'missing {_listing(missing)}' if missing else '',
            f'unexpected {_listing(extra)}' if extra else '') if part)
        raise UserError(f'{source}: not the {name.upper() if name == "um" else name} release '
                        f'parameters: {found}{_whose(state_dict)} (expected exactly '
                        f'{", ".join(keys)})')


def _check_shapes(arrays: dict, wanted: dict, source: str) -> None:
    """One line naming the config settings that differ from the file, then the tensors.

    ``wanted``: per key, the (what sets the size, size) of each axis (``TorchLayout.shapes``).
    """
    wrong, settings = [], {}
    for key, axes in wanted.items():
        shape = tuple(arrays[key].shape)
        expected = tuple(size for _, size in axes)
        if shape == expected:
            continue
        wrong.append(f'{key} {shape} (expected {expected})')
        if len(shape) == len(axes):
            for (name, size), found in zip(axes, shape):
                if found != size:
                    settings.setdefault(name, (size, found))
    if wrong:
        hints = ''.join(f'{name} is {size} in the config but {found} in the file; '
                        for name, (size, found) in settings.items())
        raise UserError(f'{source}: shapes do not fit the config: {hints}'
                        f'found {", ".join(wrong)}')


def torch_state_dict_to_params(state_dict: Mapping, cfg, num_classes: int, *,
                               source: str = 'state dict') -> dict:
    """Flax params of ``cfg``'s method from its release's state dict (torch tensors or NumPy
    arrays).

    Args:
      state_dict: exactly the release's keys (``METHOD.torch.keys``), shapes as the config says.
      cfg: the config the model is for (its method, sizes); num_classes: C.
      source: names the input in error messages (the file path).
    Returns:
      the params as float32 jax arrays; float32 input is copied bit for bit.
    Raises:
      UserError: wrong keys, dtypes, shapes (naming the config field that differs), or
      non-finite values.
    """
    import jax.numpy as jnp

    found = layout(cfg)
    keys = found.torch.keys
    state_dict = unwrap_state_dict(state_dict, source=source)
    _check_keys(state_dict, keys, found.name, source)
    arrays = {k: _to_float32(k, state_dict[k], source) for k in keys}
    _check_shapes(arrays, found.torch.shapes(cfg, num_classes), source)
    for key, value in arrays.items():
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if bad:
            raise UserError(f'{source}: {key} has {bad} non-finite values (NaN or inf) out of '
                            f'{value.size}')
    params = found.torch.to_params(arrays)
    return _tree_map(lambda v: jnp.asarray(np.ascontiguousarray(v)), params)


def _tree_map(fn, tree):
    if isinstance(tree, Mapping):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def params_to_torch_state_dict(params, cfg) -> 'collections.OrderedDict':
    """The release's state dict (an OrderedDict of float32 CPU torch tensors) from the Flax
    params of ``cfg``'s method.

    The inverse of :func:`torch_state_dict_to_params`: exact for float32 parameters. It loads
    with ``load_state_dict(strict=True)`` into the release's model.
    """
    torch = _import_torch()
    found = layout(cfg)
    try:
        arrays = found.torch.to_arrays(params)
    except (KeyError, TypeError) as e:
        raise ValueError(f'not the parameters of a {found.name} network: missing {e}') from None
    # Writable contiguous copies: torch.from_numpy shares memory and warns on read-only arrays.
    return collections.OrderedDict(
        (key, torch.from_numpy(np.array(arrays[key], np.float32, order='C', copy=True)))
        for key in found.torch.keys)


def load_state_dict(path: str) -> Mapping:
    """The parameter mapping of a PyTorch file (see :func:`load_torch_file`)."""
    return unwrap_state_dict(load_torch_file(path), source=path)


# ---------------------------------------------------------------------------------------------
# Converting a file, exporting a run

def _prepare_workdir(run, *, force: bool) -> None:
    """Refuses a run directory that has checkpoints unless ``force`` (which removes them)."""
    from wtal_jax.runs.rundir import METRICS_FILE
    folder = run.checkpoint_dir
    entries = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    if entries and not force:
        steps = [e for e in entries if e.isdigit()]
        what = (f'step{"s" if len(steps) > 1 else ""} {", ".join(sorted(steps, key=int))}'
                if steps else ', '.join(entries))
        raise UserError(f'--workdir {run.path}: already has checkpoints ({what}); choose another '
                        'directory or pass --force to replace them')
    if entries:
        shutil.rmtree(folder)
        # Rows of the replaced run would otherwise be read as this model's history.
        metrics = os.path.join(run.path, METRICS_FILE)
        if os.path.exists(metrics):
            os.remove(metrics)


def convert(model_path: str, cfg, workdir: str, *, force: bool = False
            ) -> tuple[str, tuple[str, ...]]:
    """Writes ``workdir`` (config.json, checkpoint step 0) from a release state dict.

    The step-0 state holds the converted parameters (one seed), a fresh optimiser state and
    ``cfg.seed``'s RNG; its meta is :func:`checkpoints.checkpoint_meta` plus ``converted_from``.
    Returns the checkpoint folder and the class names.
    """
    import jax
    from wtal_jax import config as config_lib, training
    from wtal_jax.data import splits
    from wtal_jax.runs import checkpoints
    from wtal_jax.runs.rundir import RunDir

    if not cfg.data.class_names:  # the classes come from the annotations (or synthetic data)
        splits.prepare_dataset(cfg, progress=False)
    names = splits.class_names(cfg)
    params = torch_state_dict_to_params(load_state_dict(model_path), cfg, len(names),
                                        source=model_path)
    if len(config_lib.run_seeds(cfg)) != 1:
        raise UserError('convert-torch writes one model: leave the config\'s seeds empty')
    with RunDir(workdir, write=True) as run:
        _prepare_workdir(run, force=force)
        built = training.build(cfg, names)
        # The shape checks above guarantee this; a failure here is a bug in the layout table.
        _assert_same_structure(jax.tree.map(lambda x: x[0], built.state.params), params)
        stacked = jax.tree.map(lambda p: p[None], params)
        state = built.state.replace(params=stacked, opt_state=jax.vmap(built.tx.init)(stacked))
        run.write_config(cfg)  # before the checkpoint: a crash leaves no orphan
        run.manager(cfg, num_seeds=1)
        saved = checkpoints.saved_state(state, built.losses)
        if not checkpoints.save_checkpoint(run, 0, saved, cfg, names,
                                           extra={'converted_from': os.path.abspath(model_path)}):
            raise UserError(f'{model_path}: the state dict holds NaN or Inf values')
    return os.path.join(run.checkpoint_dir, '0'), names


def _assert_same_structure(reference, params) -> None:
    import jax
    ref = jax.tree.map(lambda x: (x.shape, x.dtype), reference)
    got = jax.tree.map(lambda x: (x.shape, x.dtype), params)
    if ref != got:
        raise AssertionError(f'converted params {got} do not match the model {ref}')


class Exported(NamedTuple):
    """What ``export`` wrote: the checkpoint's step and run, its classes in the file's order."""
    step: int
    workdir: str
    class_names: tuple


def export(source: str, output: str, *, which: str = 'best', seed: int | None = None,
           force: bool = False) -> Exported:
    """Writes the release state dict of a run's checkpoint to ``output`` (atomically).

    ``source`` is a run directory (``which`` picks 'best' or 'latest') or RUN/checkpoints/STEP.
    An existing ``output`` is replaced only with ``force``.
    """
    from wtal_jax.runs import rundir
    check_output_path(output, overwrite=force)  # before the minutes of loading
    torch = _import_torch()
    ckpt = rundir.load_checkpoint(source, which=which, seed=seed)
    names, step, workdir = ckpt.names, ckpt.step, ckpt.workdir
    state_dict = params_to_torch_state_dict(ckpt.state.params, ckpt.cfg)
    for key, value in state_dict.items():
        if not bool(torch.isfinite(value).all()):
            raise UserError(f'{source}: step {step} has non-finite values in {key}; export a '
                            'checkpoint from before training diverged')
    write_atomic(output, lambda f: torch.save(state_dict, f), binary=True)
    return Exported(step, workdir, names)
