"""``wtal-jax bench --suite accelerator`` (wtal_jax/tools/bench_suite.py): every benchmark in one
run and one table, at tiny sizes here."""

import contextlib
import io
import json

import pytest

from wtal_jax import cli
from wtal_jax.tools import bench
from wtal_jax.tools import bench_suite as suite


TINY = suite.Scale(bench.Shape(batch_size=2, segments=8, feature_dim=8, embed_dim=8, classes=4),
                   repeats=1, loop_steps=4, log_every=2, train_videos=3, protocol_steps=8,
                   protocol_eval_every=4, seed_steps=1)


@pytest.fixture(scope='module')
def suite_output(tmp_path_factory):
    """The suite at tiny sizes, chosen as the CPU's automatic scale."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(suite.SCALES, 'quick', TINY)
        mp.chdir(tmp_path_factory.mktemp('fresh'))
        with contextlib.redirect_stdout(io.StringIO()) as out:
            status = cli.main(['bench', '--suite', 'accelerator', '--json'])
    assert status == 0
    return json.loads(out.getvalue())


def test_the_suite_runs_every_benchmark_on_a_cpu_at_quick_sizes(suite_output):
    assert (suite_output['platform'], suite_output['scale']) == ('cpu', 'quick')
    assert 'chosen automatically on a cpu' in suite_output['scale_reason']
    results = suite_output['results']
    assert [(r['benchmark'], r.get('dtype')) for r in results] == [
        ('train-step', 'float32'), ('train-step', 'bfloat16'), ('loop', 'float32'),
        ('loop', 'bfloat16'), ('protocol', 'float32'), ('seeds', 'float32'),
        ('inference', None), ('localize+map', None)]
    loops = results[2:5]
    assert all(r['train_videos'] == 3 and r['test_videos'] == 210 for r in loops)
    # One data set for the loops and the protocol.
    assert len({r['train_segments'] for r in loops}) == 1
    protocol = results[4]
    assert (protocol['steps'], protocol['eval_every_steps'], protocol['evaluations']) == (8, 4, 2)
    assert protocol['step_steps_per_second'] is None   # not timed: nothing extrapolated
    assert results[5]['seeds'] == 5 and results[5]['steps'] == 1
    assert suite_output['seconds'] > 0


def test_the_suite_table_has_one_row_per_benchmark(suite_output):
    table = suite.format_table(suite_output['results']).splitlines()
    assert len(table) == 2 + 8
    assert all(line.startswith('| ') and line.endswith(' |') and line.count(' | ') == 4
               for line in table)
    protocol = table[2 + 4]
    assert '8 steps, 2 evaluations of 210 test videos' in protocol


def test_the_suite_refuses_bad_numbers_in_one_line(capsys):
    assert cli.main(['bench', '--suite', 'accelerator', '--quick', '--protocol-steps', '3']) == 2
    _, err = capsys.readouterr()
    assert err.strip().splitlines()[-1] == ('wtal-jax bench: error: --protocol-steps 3:'
                                            ' need at least 10')
