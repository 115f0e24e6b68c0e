"""A config's splits (wtal_jax.data.splits): the class list, the splits by name, the selection
split held out only where it selects, the data fingerprint."""

import json
import os

import pytest

from wtal_jax.data import holdout, splits
from wtal_jax.errors import UserError

from test_loop import data_root, tiny_config  # noqa: F401  (the tiny data set fixture)


def test_class_names_are_the_configs_or_the_sorted_labels_of_both_subsets(data_root):  # noqa: F811
    cfg = tiny_config(data_root)
    with open(os.path.join(data_root, 'gt.json')) as f:
        database = json.load(f)['database']
    labels = {a['label'] for v in database.values() for a in v['annotations']
              if v['subset'] in ('train', 'test')}
    assert splits.class_names(cfg) == tuple(sorted(labels))
    cfg.data.class_names = ('B', 'A')
    assert splits.class_names(cfg) == ('B', 'A')


def test_splits_by_name_and_the_selection_split(data_root):  # noqa: F811
    cfg = tiny_config(data_root)
    names = splits.class_names(cfg)
    assert splits.split_names(cfg) == ('test', 'selection', 'train')
    train = splits.load_split(cfg, 'train', names, progress=False)
    selection = splits.load_split(cfg, 'selection', names, progress=False)
    whole = splits._load(cfg, cfg.data.train, names, progress=False)
    held = holdout.stratified_holdout(whole.names, whole.labels, cfg.data.selection_fraction)
    assert set(selection.names) == {n for n, h in zip(whole.names, held) if h}
    assert set(train.names) | set(selection.names) == set(whole.names)
    assert not set(train.names) & set(selection.names)
    # Held out only where the selection split selects: under 'last' every video trains.
    cfg.checkpoint.select = 'last'
    assert splits.load_split(cfg, 'train', names, progress=False).names == whole.names
    with pytest.raises(UserError, match='no selection split: checkpoint.select=last'):
        splits.load_split(cfg, 'selection', names, progress=False)
    with pytest.raises(UserError, match="no split 'val': one of test, selection, train"):
        splits.load_split(cfg, 'val', names, progress=False)


def test_the_fingerprint_names_the_videos_and_their_lengths_in_order(data_root):  # noqa: F811
    cfg = tiny_config(data_root)
    train = splits.load_split(cfg, 'train', splits.class_names(cfg), progress=False)
    found = splits.data_fingerprint(train)
    assert (found['videos'], found['feature_dim']) == (len(train), train.feature_dim)
    again = splits.data_fingerprint(holdout.take(train, range(len(train))))
    reordered = splits.data_fingerprint(holdout.take(train, range(len(train))[::-1]))
    fewer = splits.data_fingerprint(holdout.take(train, range(len(train) - 1)))
    assert again == found and reordered['sha256'] != found['sha256']
    assert fewer['sha256'] != found['sha256']


def test_an_empty_data_root_is_one_line():
    cfg = tiny_config('')
    cfg.synthetic.enabled = False
    with pytest.raises(UserError, match='data.root is empty'):
        splits.prepare_dataset(cfg, progress=False)
