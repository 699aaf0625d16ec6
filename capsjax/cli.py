"""What every capsjax command line shares: CPU tuning, quiet logs, one-line errors.

Used by `capsjax/main.py` and the scripts in `experiments/`. Defines no flags,
so importing it never clashes with a script's own flags.
"""
import contextlib
import logging as std_logging
import sys

from absl import logging

from capsjax import checkpoints
from capsjax import cpu_runtime
from capsjax import input_pipeline
from capsjax import models
from capsjax import train

# Errors the user can fix from the command line: reported in one line.
USER_ERRORS = (input_pipeline.DataError, models.InputShapeError,
               train.ConfigError, train.NonFiniteError,
               checkpoints.CheckpointMismatchError,
               checkpoints.CheckpointCorruptError)


def error_line(problem) -> str:
  """`problem` (an exception or text) as the one line the user sees."""
  return 'error: ' + ' '.join(str(problem).split())


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax (several lines per checkpoint)."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or '/orbax/' not in record.pathname)


def _drop_closed_loop_reports(unraisable, default=sys.unraisablehook):
  # When orbax fails to read a damaged checkpoint it closes its event loop
  # while tensorstore finishes the other reads, and each of those reports
  # "Event loop is closed" with a traceback. The read error itself is
  # handled (a warning and the previous checkpoint), so these say nothing.
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
    return
  default(unraisable)


def setup() -> None:
  """Call first in a command line's main(), before JAX runs anything.

  Tunes the process for XLA:CPU (`cpu_runtime`), quiets orbax's logs and
  keeps TensorFlow (which tfds uses only to read data) off the accelerators.
  """
  tuned = cpu_runtime.configure()
  logging.get_absl_handler().addFilter(_QuietLibraries())
  sys.unraisablehook = _drop_closed_loop_reports
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  import jax  # pylint: disable=g-import-not-at-top
  logging.info('JAX devices: %s', jax.devices())
  if tuned and jax.default_backend() == 'cpu':
    logging.info('CPU tuning (see capsjax/cpu_runtime.py): %s.',
                 '; '.join(tuned))


@contextlib.contextmanager
def user_errors_exit():
  """Turns a `USER_ERRORS` exception into `error: ...` and exit status 1."""
  try:
    yield
  except USER_ERRORS as e:
    sys.exit(error_line(e))
