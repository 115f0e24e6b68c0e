"""The run report (report.json): each seed's numbers under each selection rule, hand-checked."""

import numpy as np
import pytest

from wtal_jax.errors import UserError
from wtal_jax.runs import summary


def row(step, split, seed, avg, **extra):
    return {'step': step, 'split': split, 'seed': seed, 'average_mAP': avg,
            'mAP': [avg + 0.1, avg - 0.1], 'tiou_thresholds': [0.3, 0.5], 'accuracy': avg / 2,
            'classification_mAP': 1 - avg, 'averages': {'0.1:0.7': avg, '0.3:0.7': avg - 0.05},
            **extra}


# Two seeds, evaluations at steps 10, 20, 30 on the selection and test splits.
ROWS = [
    {'step': 10, 'split': 'train', 'seed': 0, 'loss': 1.0},
    row(10, 'selection', 0, 0.30), row(10, 'test', 0, 0.50),
    row(10, 'selection', 1, 0.40), row(10, 'test', 1, 0.45),
    row(20, 'selection', 0, 0.35), row(20, 'test', 0, 0.40),
    row(20, 'selection', 1, 0.40), row(20, 'test', 1, 0.55),   # ties seed 1's step 10
    row(30, 'selection', 0, 0.20), row(30, 'test', 0, 0.42),
    row(30, 'selection', 1, 0.10), row(30, 'test', 1, 0.48),
]


def test_each_rule_picks_its_step_and_reports_the_test_numbers_there():
    report = summary.run_report(ROWS, seeds=(0, 1), select='selection', test_split='test',
                                num_steps=30)
    s0, s1 = report['per_seed']
    # Seed 0: best on selection at 20 -> test 0.40; last 0.42; best on test 0.50 at step 10.
    assert (s0['selected']['step'], s0['selected']['average_mAP']) == (20, 0.40)
    assert (s0['last']['step'], s0['last']['average_mAP']) == (30, 0.42)
    assert (s0['test_selection']['step'], s0['test_selection']['average_mAP']) == (10, 0.50)
    assert s0['selection_split'] == {'step': 20, 'average_mAP': 0.35}
    # Seed 1: equal selection values at 10 and 20: the earliest step.
    assert (s1['selected']['step'], s1['selected']['average_mAP']) == (10, 0.45)
    assert (s1['test_selection']['step'], s1['test_selection']['average_mAP']) == (20, 0.55)
    mean = report['summary']['selected']['average_mAP']
    assert mean['mean'] == pytest.approx((0.40 + 0.45) / 2)
    assert mean['std'] == pytest.approx(np.std([0.40, 0.45], ddof=1))
    assert report['summary']['last']['mAP']['mean'] == pytest.approx([0.55, 0.35])
    assert report['summary']['test_selection']['averages']['0.3:0.7']['mean'] == \
        pytest.approx((0.45 + 0.50) / 2)
    assert report['summary']['selected']['accuracy']['mean'] == pytest.approx(0.2125)

    last = summary.run_report(ROWS, seeds=(0, 1), select='last', test_split='test',
                              num_steps=30)
    assert [p['selected']['step'] for p in last['per_seed']] == [30, 30]
    test = summary.run_report(ROWS, seeds=(0, 1), select='test', test_split='test',
                              num_steps=30)
    assert [p['selected']['step'] for p in test['per_seed']] == [10, 20]
    assert 'test-set selection' in test['rule']


def test_one_seed_has_zero_deviation_and_the_table_fits_80_columns():
    report = summary.run_report(ROWS, seeds=(1,), select='selection', test_split='test',
                                num_steps=30)
    assert report['summary']['selected']['average_mAP'] == {'mean': 0.45, 'std': 0.0}
    text = summary.format_report(report)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert 'tIoU 0.3' in text and 'avg 0.3:0.7' in text and 'test-set selection' in text
    assert 'seed 1: AVG 45.0 / 48.0 / 55.0 (selected step 10, best on test at step 20)' in text


def test_a_missing_last_evaluation_is_one_line():
    with pytest.raises(UserError, match='no test evaluation at step 40'):
        summary.run_report(ROWS, seeds=(0,), select='last', test_split='test', num_steps=40)
    with pytest.raises(UserError, match='no selection evaluation'):
        summary.run_report([r for r in ROWS if r['split'] != 'selection'], seeds=(0,),
                           select='selection', test_split='test', num_steps=30)


def test_of_tied_values_the_one_rule_picks_the_earliest():
    assert summary.best_index([0.3, 0.5, 0.2, 0.5], 'max') == 1
    assert summary.best_index([0.3, 0.1, 0.2, 0.1], 'min') == 1
    assert summary.best_index([0.4], 'min') == 0
    # The report: seed 1's selection values tie at steps 10 and 20 (ROWS); under 'test' with a
    # tie made at steps 10 and 30 for seed 0, the earliest again.
    rows = [dict(r, average_mAP=0.50) if (r['split'], r['seed'], r['step']) == ('test', 0, 30)
            else r for r in ROWS]
    report = summary.run_report(rows, seeds=(0,), select='test', test_split='test',
                                num_steps=30)
    assert report['per_seed'][0]['selected']['step'] == 10


def test_the_checkpoint_kept_as_a_seeds_best_is_the_one_the_rule_picks():
    """The retention policy of ``checkpoints.open_manager`` on tied metrics, listed in any order
    (Orbax's BestN kept the latest of equal values)."""
    from collections import namedtuple
    from wtal_jax.runs import checkpoints
    info = namedtuple('Info', 'step metrics')
    key = 'selection/average_mAP'
    listed = [info(30, {key: [0.2, 0.4]}), info(10, {key: [0.5, 0.4]}), info(15, None),
              info(20, {key: [0.5, 0.1]})]
    keep = [checkpoints.SeedBest(key=key, seed=s, mode=m).should_preserve(listed)
            for s, m in ((0, 'max'), (1, 'max'), (0, 'min'), (1, 'min'))]
    assert keep == [[False, True, False, False],    # seed 0: 0.5 at steps 10 and 20 -> 10
                    [False, True, False, False],    # seed 1: 0.4 at steps 30 and 10 -> 10
                    [True, False, False, False],    # seed 0, min: 0.2 at step 30
                    [False, False, False, True]]    # seed 1, min: 0.1 at step 20
    assert checkpoints.SeedBest(key=key, seed=0, mode='max').should_preserve([]) == []
