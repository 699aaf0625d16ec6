"""Scalar metrics to TensorBoard event files and to a JSON-lines file.

`WORKDIR/metrics.jsonl` gets one object per write, `{"step": .., "split": ..,
name: value, ...}`, easy to load with pandas or `json`, and holds each step
once even after an interrupted run resumed; the event files under
`WORKDIR/tensorboard/<split>/` are for `tensorboard --logdir WORKDIR`, written
with tensorboardX, so no TensorFlow is needed.
"""
import json
import math
import os
from typing import Mapping, Optional

from capsjax import workdir as workdir_lib


def _drop_records_after(path: str, step: int) -> None:
  """Keeps the complete records of `path` with `record['step'] <= step`.

  A run killed after its last checkpoint logged steps that the resumed run
  computes again; without this they would appear twice. A line cut short by
  the kill is dropped too.
  """
  if not os.path.exists(path):
    return
  kept, changed = [], False
  with open(path) as f:
    for line in f:
      try:
        keep = json.loads(line)['step'] <= step
      except (ValueError, KeyError, TypeError):
        keep = False
      if keep and not line.endswith('\n'):
        # Cut just before its newline: the next record must not join it.
        line += '\n'
        changed = True
      if keep:
        kept.append(line)
      else:
        changed = True
  if changed:
    # Atomic: a second kill must not lose the kept records.
    workdir_lib.write_text(path, ''.join(kept))


def read_split(workdir: str, split: str = 'test') -> list[dict]:
  """The records of `split` in WORKDIR/metrics.jsonl, one per step, by step.

  Each is `{'step': .., name: value, ...}` (without 'split'); a step logged
  twice keeps its last line, and a line cut short by a kill is skipped. No
  file gives [].
  """
  by_step = {}
  path = workdir_lib.path(workdir, workdir_lib.METRICS)
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue
        if record.pop('split', None) == split:
          by_step[record['step']] = record
  return [by_step[step] for step in sorted(by_step)]


class MetricWriter:
  """Writes scalars; only process 0 writes, so multi-host runs log once."""

  def __init__(self, workdir: str, enabled: bool = True,
               resume_step: Optional[int] = None):
    """Opens `WORKDIR/metrics.jsonl` for appending.

    Args:
      workdir: the run's directory.
      enabled: False on all processes but 0.
      resume_step: the step training continues from; records of later steps
        (logged before the run was interrupted) are removed.
    """
    self.enabled = enabled
    self._workdir = workdir
    self._tb = {}
    self._jsonl = None
    if enabled:
      path = workdir_lib.path(workdir, workdir_lib.METRICS)
      if resume_step is not None:
        _drop_records_after(path, resume_step)
      self._jsonl = open(path, 'a')

  def _tb_writer(self, split):
    if split not in self._tb:
      # Imported here: only process 0 writes event files.
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._tb[split] = tensorboardX.SummaryWriter(
          os.path.join(self._workdir, workdir_lib.TENSORBOARD, split))
    return self._tb[split]

  def write_scalars(self, step: int, split: str,
                    scalars: Mapping[str, float]) -> None:
    """Writes `scalars` (name -> number) for `split` ('train', 'test') at `step`."""
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    # JSON has no NaN/inf; null keeps the line parseable and the gap visible.
    record = {'step': int(step), 'split': split}
    record.update({k: v if math.isfinite(v) else None
                   for k, v in values.items()})
    line = json.dumps(record) + '\n'
    try:
      self._jsonl.write(line)
      self._jsonl.flush()
    except OSError as e:
      if not workdir_lib.is_disk_full(e):
        raise
      raise workdir_lib.disk_full_error(
          self._workdir, workdir_lib.METRICS, len(line),
          'the checkpoints are intact') from None
    writer = self._tb_writer(split)
    for name, value in values.items():
      writer.add_scalar(name, value, global_step=int(step))
    writer.flush()

  def close(self) -> None:
    for writer in self._tb.values():
      writer.close()
    self._tb = {}
    if self._jsonl:
      jsonl, self._jsonl = self._jsonl, None
      try:
        jsonl.close()
      except OSError as e:
        # The write that failed already raised; a resumed run drops records
        # after its checkpoint, cut lines included.
        if not workdir_lib.is_disk_full(e):
          raise
