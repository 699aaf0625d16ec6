"""docs/tour.ipynb: committed with its outputs, and it runs top to bottom.

CI executes a copy, shrunk (CAPSJAX_TOUR_SMALL=1), the way
`python experiments/make_tour.py` regenerates the committed file.
"""
import os

import pytest

from conftest import ROOT
from conftest import load_script

# The `dev` extra installs them (with ipykernel, the notebook's kernel).
nbclient = pytest.importorskip(
    'nbclient', reason='executing the tour needs nbclient: pip install -e ".[dev]"')
nbformat = pytest.importorskip(
    'nbformat', reason='reading the tour needs nbformat: pip install -e ".[dev]"')

NOTEBOOK = os.path.join(ROOT, 'docs', 'tour.ipynb')
make_tour = load_script('make_tour')


def code_cells(notebook):
  return [c for c in notebook.cells if c.cell_type == 'code']


def png_count(notebook):
  return sum('image/png' in o.get('data', {})
             for c in code_cells(notebook) for o in c.outputs)


def last_printed(notebook):
  return ''.join(o.get('text', '') for o in code_cells(notebook)[-1].outputs)


@pytest.mark.slow  # a Jupyter kernel runs the whole notebook
def test_tour_notebook_executes(tmp_path):
  env = make_tour.tour_env(small=True)
  env['TMPDIR'] = str(tmp_path)
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Raises CellExecutionError, naming the cell, if any cell fails.
  make_tour.execute(notebook, env, timeout=600)
  assert [c.execution_count for c in code_cells(notebook)] == list(
      range(1, len(code_cells(notebook)) + 1))
  # The last cell printed the routing-iterations table.
  text = last_printed(notebook)
  assert 'coupling entropy' in text and '3*' in text, text
  assert png_count(notebook) >= 9, png_count(notebook)
  assert notebook.metadata == make_tour.METADATA
  assert not any('execution' in c.metadata for c in notebook.cells)


def test_committed_with_the_outputs_of_a_full_run():
  # What `python experiments/make_tour.py` writes, so the tour reads on a
  # code host without running.
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  cells = code_cells(notebook)
  assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
  assert all(c.outputs for c in cells[1:]), 'run experiments/make_tour.py'
  assert png_count(notebook) >= 9
  assert not any(o.output_type == 'error' for c in cells for o in c.outputs)
  assert notebook.metadata == make_tour.METADATA
  # A full run, not the shrunk CI setting: 1, 2, 3 and 5 iterations.
  rows = [line.split()[0] for line in last_printed(notebook).splitlines()[1:]
          if line.strip()[:1].isdigit()]
  assert rows == ['1', '2', '3*', '5'], rows
  assert os.path.getsize(NOTEBOOK) < 1_500_000
