"""Shared test fixtures: the real THUMOS'14 annotation data in ../shared (read, never copied)."""

import os
import subprocess

import pytest

# Tests compare float32 results with NumPy references at ~1e-5. On GPUs JAX's default float32
# matmul precision is TF32 (as PyTorch's cuDNN convolutions); ask for full float32 so that the
# same tests hold on a GPU as on the CPU, where this changes nothing.
os.environ.setdefault('JAX_DEFAULT_MATMUL_PRECISION', 'highest')

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


@pytest.fixture
def tmpfs(tmp_path):
    """``make(size)``: a new folder with a tmpfs of ``size`` (mount's syntax, e.g. '64k')
    mounted on it, unmounted after the test. Mounting needs root (CAP_SYS_ADMIN); elsewhere the
    test skips, saying so."""
    mounted = []

    def make(size: str):
        folder = tmp_path / f'disk{len(mounted)}'
        folder.mkdir()
        proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs',
                               str(folder)], capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f'cannot mount a small tmpfs to fill up (needs root): '
                        f'{proc.stderr.strip()}')
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(['umount', str(folder)], check=True)
