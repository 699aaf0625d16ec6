"""Scalar metrics to TensorBoard event files and to a JSON-lines file.

`WORKDIR/metrics.jsonl` gets one object per write, `{"step": .., "split": ..,
name: value, ...}`, easy to load with pandas or `json`; the event files under
`WORKDIR/tensorboard/<split>/` are for `tensorboard --logdir WORKDIR`.
"""
import json
import math
import os
from typing import Mapping


class MetricWriter:
  """Writes scalars; only process 0 writes, so multi-host runs log once."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._workdir = workdir
    self._tb = {}
    self._jsonl = None
    if enabled:
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')

  def _tb_writer(self, split):
    if split not in self._tb:
      # TensorFlow is imported here, not at module import, because only the
      # event-file format needs it and it takes seconds to import.
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tb[split] = tf.summary.create_file_writer(
          os.path.join(self._workdir, 'tensorboard', split))
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
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with self._tb_writer(split).as_default():
      for name, value in values.items():
        tf.summary.scalar(name, value, step=int(step))

  def flush(self) -> None:
    for writer in self._tb.values():
      writer.flush()
    if self._jsonl:
      self._jsonl.flush()

  def close(self) -> None:
    for writer in self._tb.values():
      writer.close()
    self._tb = {}
    if self._jsonl:
      self._jsonl.close()
      self._jsonl = None
