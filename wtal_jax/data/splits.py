"""A config's data splits: which videos train, select checkpoints and test, read into memory.

The training loop, ``evaluate``, the figures and the notebooks read data through these functions,
so they all agree on the class list, the held-out selection split and the test split.
NumPy only.
"""

import hashlib
import os

from wtal_jax import config as config_lib
from wtal_jax.data import annotations, dataset, holdout, synthetic
from wtal_jax.errors import UserError

SELECTION = 'selection'   # the name of the held-out part of the training videos


def prepare_dataset(cfg, *, progress: bool = True) -> None:
    """Generates the synthetic data set into ``data.root`` when the config asks for it."""
    if cfg.synthetic.enabled:
        params = {k: v for k, v in cfg.synthetic.items() if k != 'enabled'}
        synthetic.ensure(cfg.data.root, progress=progress, **params)
    if not cfg.data.root:
        raise UserError('data.root is empty: pass --config.data.root=FOLDER')


def class_names(cfg) -> tuple[str, ...]:
    """The configured class list, or the sorted labels of the train and test subsets."""
    if cfg.data.class_names:
        return tuple(cfg.data.class_names)
    found = annotations.load_annotations(os.path.join(cfg.data.root, cfg.data.annotation_file))
    return annotations.class_names_from(found, (cfg.data.train.subset, cfg.data.test.subset), ())


def split_names(cfg) -> tuple[str, ...]:
    """The names ``evaluate --split`` accepts: the test subset, the selection split, train."""
    return (cfg.data.test.subset, SELECTION, cfg.data.train.subset)


def load_split(cfg, name: str, names: tuple[str, ...], *, progress: bool = True
               ) -> dataset.Split:
    """Loads a split by name (see :func:`split_names`) into memory, validated.

    The training subset's name gives its training part (without the selection videos), and
    ``selection`` the held-out part.
    """
    if name not in split_names(cfg):
        raise UserError(f'no split {name!r}: one of {", ".join(split_names(cfg))}')
    if name == cfg.data.test.subset:
        return _load(cfg, cfg.data.test, names, progress=progress)
    training, selection = load_training(cfg, names, progress=progress)
    if name == SELECTION and not len(selection):
        raise UserError(f'no selection split: checkpoint.select={cfg.checkpoint.select}, '
                        f'data.selection_fraction={cfg.data.selection_fraction:g} hold out no '
                        'training video')
    return selection if name == SELECTION else training


def load_training(cfg, names: tuple[str, ...], *, progress: bool = True
                  ) -> tuple[dataset.Split, dataset.Split]:
    """(training part, selection part) of the training split, read once.

    Videos are held out only where they select the checkpoint (``checkpoint.select=selection``):
    under 'last' or 'test' every training video trains, as in the release.
    """
    split = _load(cfg, cfg.data.train, names, progress=progress)
    fraction = cfg.data.selection_fraction if cfg.checkpoint.select == 'selection' else 0.0
    return holdout.holdout(split, fraction)


def _load(cfg, part, names, *, progress: bool) -> dataset.Split:
    return dataset.load_split(
        cfg.data.root, annotation_file=cfg.data.annotation_file, split_file=part.split_file,
        feature_dir=part.feature_dir, subset=part.subset, modality=cfg.data.modality,
        class_names=names, feature_dim=cfg.data.feature_dim,
        segment_seconds=config_lib.segment_seconds(cfg), use_duration=cfg.data.use_duration,
        require_labels=part is cfg.data.train, missing=cfg.data.missing, progress=progress)


def data_fingerprint(split: dataset.Split) -> dict:
    """What identifies the training data without reading it again: ids and lengths, in order.

    A moved data folder keeps it; other videos, other lengths or another order change it.
    """
    text = '\n'.join(f'{n} {int(s)}' for n, s in zip(split.names, split.num_segments))
    return {'videos': len(split), 'feature_dim': split.feature_dim,
            'sha256': hashlib.sha256(text.encode('utf-8')).hexdigest()}
