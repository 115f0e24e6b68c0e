"""runs/detect.py: the durations files that place detections in seconds. Detection itself,
through the command line, is tested with the data sets it needs: ActivityNet-shaped ones in
test_prepare.py, THUMOS'14-shaped ones in test_cli.py."""

import json

import numpy as np
import pytest

from wtal_jax.errors import UserError


def test_read_durations_forms(tmp_path):
    from wtal_jax.runs.detect import read_durations
    forms = {'plain.json': {'abc': 12.5, 'def': '3.25'},
             'objects.json': {'abc': {'duration': 12.5, 'fps': 30.0}, 'def': {'duration': 3.25}},
             'annotations.json': {'version': 'VERSION 1.3', 'database': {
                 'abc': {'subset': 'validation', 'duration': 12.5, 'annotations': []},
                 'def': {'subset': 'testing', 'duration': '3.25', 'annotations': []},
                 'ghi': {'subset': 'testing', 'annotations': []}}}}   # no duration: left out
    for name, content in forms.items():
        (tmp_path / name).write_text(json.dumps(content))
        assert read_durations(str(tmp_path / name)) == {'abc': 12.5, 'def': 3.25}, name


@pytest.mark.parametrize('content,words', [
    ([1, 2], ['expected a JSON object', 'list']),
    ({'abc': {'fps': 30}}, ['video abc', 'without "duration"']),
    ({'abc': -1.0}, ['video abc', 'not positive']),
    ({'abc': 'long'}, ['video abc', "'long' is not a number"]),
    ({'database': {'abc': {'subset': 'x', 'duration': 0}}}, ['video abc', 'not positive']),
])
def test_read_durations_refuses_bad_files(tmp_path, content, words):
    from wtal_jax.runs.detect import read_durations
    path = tmp_path / 'durations.json'
    path.write_text(json.dumps(content))
    with pytest.raises(UserError) as info:
        read_durations(str(path))
    assert str(path) in str(info.value) and '\n' not in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_match_durations_prefers_the_exact_id_and_counts_the_missing():
    from wtal_jax.runs.detect import match_durations
    ids, seconds = match_durations(['v_abc', 'def', 'v_ghi'],
                                   {'abc': 1.0, 'def': 2.0, 'v_ghi': 3.0, 'ghi': 4.0}, 'd.json')
    assert ids == ['abc', 'def', 'v_ghi']
    np.testing.assert_array_equal(seconds, [1.0, 2.0, 3.0])
    with pytest.raises(UserError, match=r'^d.json: no duration for 2 of 3 videos \(e.g. v_x, y\)$'):
        match_durations(['v_x', 'abc', 'y'], {'abc': 1.0}, 'd.json')
