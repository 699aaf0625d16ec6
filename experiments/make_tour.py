r"""Runs docs/tour.ipynb and writes it back in place, outputs included.

    python experiments/make_tour.py

The notebook is committed with its outputs (figures included) so that it
reads on a code host without running; this is the one command that remakes
them. It executes every cell with the `python3` kernel from the checkout's
root, as `jupyter nbconvert --execute` would, then fixes the notebook-level
metadata (kernel, language) and records no timings, so that a rerun changes
only what the cells print and draw. With --gallery (default docs/gallery) the
tour also saves its two gallery figures there. --small runs the shrunk
setting CI executes (CAPSJAX_TOUR_SMALL=1), for trying the command out; a
notebook made that way is refused by tests/experiments/test_make_tour.py.

Needs the `dev` extra (nbclient, nbformat, ipykernel, matplotlib).
"""
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'docs', 'tour.ipynb')
KERNEL = 'python3'
# The notebook-level metadata the file keeps: no versions or paths of the
# machine that ran it.
METADATA = {
    'kernelspec': {'display_name': 'Python 3', 'language': 'python',
                   'name': KERNEL},
    'language_info': {'name': 'python'},
}
# The tour's settings (see its first cell); each run sets them explicitly.
TOUR_ENV = ('CAPSJAX_TOUR_SMALL', 'CAPSJAX_TOUR_WORKDIR',
            'CAPSJAX_TOUR_GALLERY')

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string('notebook', NOTEBOOK, 'The notebook to run and rewrite.',
                      flag_values=flag_values)
  flags.DEFINE_string('out', None, 'Where to write it (default: in place).',
                      flag_values=flag_values)
  flags.DEFINE_string('gallery', os.path.join(ROOT, 'docs', 'gallery'),
                      'Also save the tour figures there (empty: do not).',
                      flag_values=flag_values)
  flags.DEFINE_string('workdir', '', 'Open this finished run instead of '
                      'training one (CAPSJAX_TOUR_WORKDIR).',
                      flag_values=flag_values)
  flags.DEFINE_bool('small', False, 'The shrunk setting CI runs.',
                    flag_values=flag_values)
  flags.DEFINE_integer('timeout', 3600, 'Seconds one cell may take.',
                       flag_values=flag_values)


def tour_env(small: bool = False, workdir: str = '',
             gallery: str = '') -> dict[str, str]:
  """The environment of the tour's kernel: this process's, with the tour's
  settings replaced and the checkout first on PYTHONPATH."""
  env = {k: v for k, v in os.environ.items() if k not in TOUR_ENV}
  if small:
    env['CAPSJAX_TOUR_SMALL'] = '1'
  if workdir:
    env['CAPSJAX_TOUR_WORKDIR'] = workdir
  if gallery:
    env['CAPSJAX_TOUR_GALLERY'] = gallery
  env['PYTHONPATH'] = os.pathsep.join(
      [ROOT] + [p for p in [os.environ.get('PYTHONPATH', '')] if p])
  return env


def normalize(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
  """`notebook` with fixed notebook metadata and no per-cell timings, in
  place; returns it."""
  notebook.metadata = nbformat.from_dict(METADATA)
  for cell in notebook.cells:
    cell.metadata.pop('execution', None)
  return notebook


def execute(notebook: nbformat.NotebookNode, env: dict[str, str],
            timeout: int = 3600) -> nbformat.NotebookNode:
  """Runs every cell of `notebook` (outputs replaced) from the checkout's
  root with `env`; returns it normalized.

  Raises:
    nbclient.exceptions.CellExecutionError: naming the cell that failed.
  """
  for cell in notebook.cells:
    if cell.cell_type == 'code':
      cell.outputs = []
      cell.execution_count = None
  client = nbclient.NotebookClient(
      notebook, timeout=timeout, kernel_name=KERNEL, record_timing=False,
      resources={'metadata': {'path': ROOT}})
  client.execute(env=env)
  return normalize(notebook)


def main(argv: Sequence[str]) -> Optional[int]:
  del argv
  notebook = nbformat.read(FLAGS.notebook, as_version=4)
  gallery = FLAGS.gallery
  if gallery:
    os.makedirs(gallery, exist_ok=True)
  env = tour_env(FLAGS.small, FLAGS.workdir, os.path.abspath(gallery)
                 if gallery else '')
  execute(notebook, env, FLAGS.timeout)
  out = FLAGS.out or FLAGS.notebook
  nbformat.write(notebook, out)
  print(f'wrote {out} ({os.path.getsize(out) / 1e3:.0f} kB)')
  return 0


if __name__ == '__main__':
  define_flags()
  app.run(main)
