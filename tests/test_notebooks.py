"""Every notebook runs top to bottom (nbclient, kernel python3) in a temporary folder.

The kernel's working directory is the temporary folder, so the notebooks' relative paths
(``data/synthetic``, ``runs/...``) land there. The committed notebooks carry no outputs.
"""

import json
import os

import pytest

nbformat = pytest.importorskip('nbformat', reason='notebooks run with the [test] extra (nbformat)')
nbclient = pytest.importorskip('nbclient', reason='notebooks run with the [test] extra (nbclient)')
pytest.importorskip('matplotlib', reason='figures need the [viz] extra (matplotlib)')

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'notebooks')
CELL_TIMEOUT_S = 240


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """One folder for every notebook, so the synthetic data set is generated once."""
    return tmp_path_factory.mktemp('notebooks')


def execute(name: str, cwd) -> nbformat.NotebookNode:
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name='python3',
                                     resources={'metadata': {'path': str(cwd)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure
    return notebook


def images(notebook) -> int:
    return sum('image/png' in out.get('data', {}) for cell in notebook.cells
               if cell.cell_type == 'code' for out in cell.get('outputs', []))


@pytest.mark.parametrize('name', ['quickstart.ipynb', 'inspect_checkpoint.ipynb',
                                  'custom_method.ipynb'])
def test_committed_without_outputs(name):
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == 'code':
            assert cell.outputs == [] and cell.execution_count is None


def test_quickstart_runs(workdir):
    notebook = execute('quickstart.ipynb', workdir)
    assert images(notebook) == 4  # curves, magnitudes, timeline, magnitudes with/without L_um
    assert (workdir / 'runs' / 'quickstart' / 'metrics.jsonl').exists()


def test_inspect_checkpoint_runs_and_trains_a_tiny_run_when_needed(workdir, monkeypatch):
    run = workdir / 'runs' / 'ci_tiny'
    monkeypatch.setenv('WTAL_RUN', str(run))  # the kernel inherits the environment
    notebook = execute('inspect_checkpoint.ipynb', workdir)
    assert (run / 'config.json').exists()
    assert images(notebook) == 2  # timeline and magnitudes
    text = ''.join(out.get('text', '') for cell in notebook.cells
                   for out in cell.get('outputs', []))
    assert 'trained a tiny run' in text and 'AP of ' in text


def test_custom_method_writes_a_method_trains_it_beside_um_and_compares(workdir):
    notebook = execute('custom_method.ipynb', workdir)
    text = ''.join(out.get('text', '') for cell in notebook.cells
                   for out in cell.get('outputs', []))
    assert (workdir / 'my_method.py').exists()
    with open(workdir / 'runs' / 'custom_sharper' / 'config.json') as f:
        assert json.load(f)['method'] == str(workdir / 'my_method.py')
    assert 'paired seeds: 0, 1, 2 (n = 3)' in text and 'B − A = ' in text
