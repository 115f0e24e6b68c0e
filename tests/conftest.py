"""Shared test fixtures: the real THUMOS'14 annotation data in ../shared (read, never copied)."""

import os

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_THUMOS14 = os.environ.get(
    'WTAL_SHARED_THUMOS14', os.path.join(os.path.dirname(_REPO), 'shared', 'data', 'thumos14'))


@pytest.fixture(scope='session')
def thumos14_dir():
    """Folder holding the real THUMOS'14 gt.json, split lists and durations.json.

    These files are not ours to redistribute, so they live beside the checkout in ../shared.
    Tests that need them skip, naming the folder, where a checkout has no ../shared.
    """
    if not os.path.exists(os.path.join(SHARED_THUMOS14, 'gt.json')):
        pytest.skip(f'real THUMOS14 annotations not found at {SHARED_THUMOS14} '
                    '(set WTAL_SHARED_THUMOS14 to their folder)')
    return SHARED_THUMOS14
