"""Tests for capsjax.workdir: atomic writes and the multi-host prepare."""
import json
import os

import matplotlib
import pytest

from capsjax import errors
from capsjax import workdir

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_write_json_is_sorted_indented_and_reads_back(tmp_path):
  path = str(tmp_path / 'x.json')
  workdir.write_json(path, {'b': 1, 'a': [1, 2]})
  with open(path) as f:
    text = f.read()
  assert text == json.dumps({'a': [1, 2], 'b': 1}, indent=2) + '\n'
  assert workdir.read_json(path) == {'a': [1, 2], 'b': 1}
  assert os.listdir(tmp_path) == ['x.json']  # no temporary file left


def test_read_json_of_a_missing_or_damaged_file_is_none(tmp_path):
  assert workdir.read_json(str(tmp_path / 'missing.json')) is None
  (tmp_path / 'half.json').write_text('{"steps": 4')
  assert workdir.read_json(str(tmp_path / 'half.json')) is None


def test_a_failed_write_leaves_the_old_file(tmp_path):
  path = str(tmp_path / 'summary.json')
  workdir.write_json(path, {'steps': 4})

  def crash(tmp):
    with open(tmp, 'w') as f:
      f.write('{"ste')
    raise OSError('disk full')

  with pytest.raises(OSError, match='disk full'):
    workdir.write_atomic(path, crash)
  assert workdir.read_json(path) == {'steps': 4}


def test_write_atomic_keeps_the_extension_for_format_sniffing_writers(
    tmp_path):
  seen = []
  workdir.write_atomic(str(tmp_path / 'plot.png'),
                       lambda tmp: seen.append(tmp) or open(tmp, 'w').close())
  assert seen[0].endswith('.png') and seen[0] != str(tmp_path / 'plot.png')
  assert os.listdir(tmp_path) == ['plot.png']


def test_leader_creates_the_workdir_and_leaves_no_probe(tmp_path):
  waited = []
  got = workdir.prepare(str(tmp_path / 'a' / 'run'), wait=waited.append)
  assert got == str(tmp_path / 'a' / 'run')
  assert os.listdir(got) == []
  assert waited == ['capsjax_workdir_prepared']


def test_non_leader_writes_nothing_and_waits(tmp_path, monkeypatch):
  # On a shared workdir only process 0 writes the probe; the others wait at
  # the barrier, then only look.
  run = tmp_path / 'run'
  run.mkdir()
  waited = []
  opened = []
  real_open = open

  def watched_open(file, mode='r', *args, **kwargs):
    if any(m in mode for m in 'wax+'):
      opened.append(file)
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr('builtins.open', watched_open)
  monkeypatch.setattr(os, 'makedirs', lambda *a, **k: opened.append(a))
  monkeypatch.setattr(os, 'remove', lambda *a, **k: opened.append(a))
  got = workdir.prepare(str(run), is_leader=False, wait=waited.append)
  assert got == str(run)
  assert waited == ['capsjax_workdir_prepared']
  assert not opened
  assert os.listdir(run) == []


def test_non_leader_without_the_directory_is_a_config_error(tmp_path):
  # The leader could not create it, or it is not on a shared file system.
  waited = []
  with pytest.raises(errors.ConfigError) as e:
    workdir.prepare(str(tmp_path / 'elsewhere'), is_leader=False,
                    wait=waited.append)
  assert waited == ['capsjax_workdir_prepared']
  message = str(e.value)
  assert '\n' not in message and 'pass a writable --workdir' in message
  assert 'shared file system' in message
  assert not (tmp_path / 'elsewhere').exists()


def test_leader_that_cannot_write_still_reaches_the_barrier(tmp_path):
  # Raising before the barrier would leave the other hosts waiting forever.
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  waited = []
  with pytest.raises(errors.ConfigError, match='cannot write to workdir'):
    workdir.prepare(str(blocker / 'run'), wait=waited.append)
  assert waited == ['capsjax_workdir_prepared']


def test_write_figure_is_byte_stable_and_closes_the_figure(tmp_path):
  written = []
  for name in ('a.png', 'b.png'):
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    path = tmp_path / name
    workdir.write_figure(str(path), fig)
    assert not plt.fignum_exists(fig.number)
    written.append(path.read_bytes())
  assert written[0].startswith(b'\x89PNG') and written[0] == written[1]
  assert b'Software' not in written[0]
  assert sorted(os.listdir(tmp_path)) == ['a.png', 'b.png']
