"""Stopping training cleanly on SIGTERM or SIGINT (preemption, Ctrl-C).

While a `StopOnSignal` is entered, the first SIGTERM or SIGINT only records
the request: the training loop finishes the step it is in, saves a checkpoint
and the metrics so far, and `train.train_and_evaluate` raises
`errors.Preempted`, which the command line turns into one line and exit
status `cli.EXIT_PREEMPTED`. A second signal exits at once with status
128 + its number: every file of the workdir is written atomically, so that is
as safe as the kill -9 the checkpoints already survive.

No JAX: the loop agrees on the stop step across processes itself
(`parallel.any_process`).
"""
import os
import signal
import sys
import threading
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
  """A context manager that turns SIGTERM and SIGINT into a stop request.

  Outside the main thread (where Python cannot set handlers) it installs
  nothing and `signal` stays None. The previous handlers come back on exit.
  """

  def __init__(self):
    self.signal: Optional[int] = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signal is not None

  @property
  def name(self) -> str:
    """The first signal's name, e.g. 'SIGTERM'."""
    return signal.Signals(self.signal).name if self.requested else ''

  def install(self) -> 'StopOnSignal':
    """Handles SIGTERM and SIGINT from now on (main thread only)."""
    if threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def restore(self) -> None:
    """Puts back the handlers `install` replaced."""
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def __enter__(self) -> 'StopOnSignal':
    return self.install()

  def __exit__(self, *exc_info) -> None:
    self.restore()

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.requested:
      sys.stderr.write(f'{name} again: exiting at once; the latest complete '
                       f'checkpoint is kept and a rerun resumes from it.\n')
      sys.stderr.flush()
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.signal = signum
    sys.stderr.write(f'{name}: stopping after this step with a checkpoint '
                     f'(send it again to exit at once).\n')
    sys.stderr.flush()
