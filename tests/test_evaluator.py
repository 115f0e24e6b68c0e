"""The evaluator (wtal_jax.postprocess.evaluator): a split's inference, localisation and mAP for
any parameters, as one named Evaluation whose parts agree with each other and with the pieces
it is made of."""

import json

import jax
import numpy as np
import pytest

from wtal_jax import training
from wtal_jax.data import splits
from wtal_jax.postprocess import average_precision, eval_files, localization
from wtal_jax.postprocess.evaluator import Evaluation, Evaluator

from test_loop import data_root, tiny_config  # noqa: F401  (the tiny data set fixture)


@pytest.fixture(scope='module', params=['um', 'basnet'])
def evaluated(request, data_root):  # noqa: F811
    cfg = tiny_config(data_root, f'--config.method={request.param}')
    if request.param == 'basnet':   # untrained: localise whatever scores highest
        cfg.localize.theta_vid = 0.1
    names = splits.class_names(cfg)
    built = training.build(cfg, names)
    params = training.unstack_state(built.state, 0).params
    out = {}
    for name in ('test', 'selection'):
        split = splits.load_split(cfg, name, names, progress=False)
        evaluator = Evaluator(cfg, split, built.model, split_name=name)
        out[name] = (split, evaluator, evaluator(params), params)
    return cfg, out


def test_an_evaluation_is_named_and_its_parts_agree(evaluated):
    cfg, out = evaluated
    split, evaluator, evaluation, params = out['test']
    assert isinstance(evaluation, Evaluation)
    metrics, results, detection, figures = evaluation   # still a tuple for unpacking
    assert metrics is evaluation.metrics and detection is evaluation.detection
    assert metrics['average_mAP'] == pytest.approx(float(np.mean(metrics['mAP'])))
    assert metrics['mAP'] == [float(m) for m in detection.map]
    assert metrics['tiou_thresholds'] == list(cfg.eval.tiou_thresholds)
    assert metrics['averages'] == figures['averages']
    json.dumps(metrics, allow_nan=False)   # the training log's row
    # The results are the shared localisation of the method's scores.
    scores = evaluator.scores(params)
    again = localization.localize(dict(zip(split.names, scores)), split.class_names,
                                  localization.LocalizeConfig.from_config(cfg))
    assert again['results'] == results['results']
    # The video-level metrics come from the scores' p_act, at eval.class_threshold.
    p_act = np.stack([s.p_act for s in scores])
    assert metrics['accuracy'] == pytest.approx(average_precision.video_accuracy(
        p_act, split.labels, cfg.eval.class_threshold))


def test_the_test_split_is_scored_on_its_whole_subset_and_selection_on_its_own_videos(
        evaluated):
    cfg, out = evaluated
    test_split, test_evaluator, *_ = out['test']
    selection, selection_evaluator, *_ = out['selection']
    subset = eval_files.load_ground_truth(f'{cfg.data.root}/{cfg.data.annotation_file}',
                                          cfg.data.test.subset)
    assert test_evaluator.gt.video_names == subset.video_names
    assert set(selection_evaluator.gt.video_names) <= set(selection.names)
    assert selection_evaluator.split_name == 'selection'


def test_outputs_are_each_videos_own_length(evaluated):
    cfg, out = evaluated
    split, evaluator, _, params = out['test']
    fixed = cfg.data.test_sampling == 'fixed'
    for video, n in zip(evaluator.outputs(params), split.num_segments):
        assert video.num_segments == n
        assert video.length == (cfg.data.num_segments if fixed else min(n, cfg.data.num_segments))
    leaves = jax.tree.leaves(evaluator.outputs(params)[0].outputs)
    assert all(np.all(np.isfinite(x)) for x in leaves)
