"""`pip install capsjax` without extras: light, and the routing snippet runs.

Installs this checkout into a fresh virtualenv from PyPI (pip's cache makes
reruns faster), as a researcher who only wants the routing would.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from test_docs import fenced_block

# What the extras add and the plain install must not pull in.
HEAVY = ('tensorflow', 'tensorflow-cpu', 'tensorflow-datasets')

# Appended to docs/routing.md's snippet: what it computed, for the test to
# check.
REPORT = '''
import json as _json
import numpy as _np
print(_json.dumps({'c': list(c.shape), 'v': list(v.shape),
                   'loss': float(loss),
                   'grad_w_nonzero': bool(_np.any(_np.asarray(grad_w) != 0)),
                   'capsjax': capsjax.__file__}))
'''


def run(command, **kwargs):
  # Without PYTHONPATH: the venv must find capsjax through its install.
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PIP_USER')}
  result = subprocess.run(command, env=env, capture_output=True, text=True,
                          **kwargs)
  assert result.returncode == 0, (command, result.stderr[-3000:])
  return result.stdout


@pytest.mark.slow
def test_plain_install_runs_the_routing_snippet_without_tensorflow(tmp_path):
  start = time.perf_counter()
  venv = tmp_path / 'venv'
  run([sys.executable, '-m', 'venv', str(venv)], timeout=300)
  python = str(venv / 'bin' / 'python')
  # --no-compile: byte-compiling every installed module is half the
  # install's time; the snippet compiles the few it imports.
  run([python, '-m', 'pip', 'install', '--disable-pip-version-check', '-q',
       '--no-compile', '-e', ROOT], timeout=1800)
  installed = {p['name'].lower() for p in json.loads(run(
      [python, '-m', 'pip', 'list', '--format=json',
       '--disable-pip-version-check'], timeout=300))}
  assert 'capsjax' in installed
  assert {'jax', 'flax', 'numpy'} <= installed
  assert not installed & set(HEAVY), sorted(installed & set(HEAVY))

  snippet = tmp_path / 'snippet.py'
  snippet.write_text(fenced_block(
      'docs/routing.md', '## Use the routing in your own model') + REPORT)
  out = run([python, str(snippet)], cwd=tmp_path, timeout=600)
  lines = out.strip().splitlines()
  assert lines[0] == '(3, 1152, 10)'  # the snippet's own print
  report = json.loads(lines[-1])
  assert report['c'] == [3, 1152, 10] and report['v'] == [10, 16]
  assert report['loss'] > 0 and report['grad_w_nonzero']
  # The checkout under test, installed editable.
  assert report['capsjax'] == os.path.join(ROOT, 'capsjax', '__init__.py')
  print(f'fresh venv + pip install -e (no extras) + snippet: '
        f'{time.perf_counter() - start:.0f} s')
