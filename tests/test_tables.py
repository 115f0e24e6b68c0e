"""Tests for wtal_jax.postprocess.tables: the paper-style table and the JSON of a result."""

import json

import pytest

from wtal_jax.postprocess import average_precision, tables
from evaluation_cases import (THUMOS_THRESHOLDS, gt_doc, pred_doc, write_json)


def test_evaluate_files_json_and_table(tmp_path):
    gt_path = write_json(tmp_path / 'gt.json', gt_doc({'v1': [('A', 0, 10), ('B', 20, 30)]}))
    # A: tIoU 0.5 -> matched up to 0.5. B: tIoU 0.8 -> matched up to 0.8.
    pred_path = write_json(tmp_path / 'p.json', pred_doc({'v1': [('A', 0.9, 0, 5),
                                                                 ('B', 0.8, 20, 28)]}))
    result = average_precision.evaluate_files(gt_path, pred_path, 'test', '0.1:0.7:0.1')
    assert result.map.tolist() == [1, 1, 1, 1, 1, 0.5, 0.5]
    out = average_precision.result_to_json(result)
    assert out == {'tiou_thresholds': THUMOS_THRESHOLDS, 'mAP': [1, 1, 1, 1, 1, 0.5, 0.5],
                   'average_mAP': result.average_map,
                   'ap': {'A': [1, 1, 1, 1, 1, 0, 0], 'B': [1] * 7}}
    assert result.average_map == pytest.approx(6 / 7, abs=1e-15)
    json.dumps(out, allow_nan=False)
    assert tables.format_table(result).splitlines() == [
        'mAP@tIoU |   0.1   0.2   0.3   0.4   0.5  0.6  0.7 |  AVG',
        'mAP (%)  | 100.0 100.0 100.0 100.0 100.0 50.0 50.0 | 85.7']
