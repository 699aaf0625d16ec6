"""docs/tour.ipynb runs top to bottom (shrunk: CAPSJAX_TOUR_SMALL=1)."""
import os

import pytest

from conftest import ROOT

# The `dev` extra installs them (with ipykernel, the notebook's kernel).
nbclient = pytest.importorskip(
    'nbclient', reason='executing the tour needs nbclient: pip install -e ".[dev]"')
nbformat = pytest.importorskip(
    'nbformat', reason='reading the tour needs nbformat: pip install -e ".[dev]"')

NOTEBOOK = os.path.join(ROOT, 'docs', 'tour.ipynb')


def test_tour_notebook_executes(monkeypatch, tmp_path):
  monkeypatch.setenv('CAPSJAX_TOUR_SMALL', '1')
  monkeypatch.delenv('CAPSJAX_TOUR_WORKDIR', raising=False)
  monkeypatch.delenv('CAPSJAX_TOUR_GALLERY', raising=False)
  monkeypatch.setenv('PYTHONPATH', ROOT)
  monkeypatch.setenv('TMPDIR', str(tmp_path))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Raises CellExecutionError, naming the cell, if any cell fails.
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': ROOT}}).execute()
  code_cells = [c for c in notebook.cells if c.cell_type == 'code']
  assert all(c.get('execution_count') for c in code_cells)
  # The last cell printed the routing-iterations table.
  text = ''.join(o.get('text', '') for o in code_cells[-1].outputs)
  assert 'coupling entropy' in text and '3*' in text, text
  images = sum('image/png' in o.get('data', {})
               for c in code_cells for o in c.outputs)
  assert images >= 9, images


def test_committed_without_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None
