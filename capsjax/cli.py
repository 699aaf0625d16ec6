"""What every capsjax command line shares: quiet logs and one-line errors.

Used by `capsjax/main.py` and the scripts in `experiments/`. Defines no flags,
so importing it never clashes with a script's own flags.
"""
import contextlib
import logging as std_logging
import sys

from absl import logging

from capsjax import checkpoints
from capsjax import input_pipeline
from capsjax import models
from capsjax import train

# Errors the user can fix from the command line: reported in one line.
USER_ERRORS = (input_pipeline.DataError, models.InputShapeError,
               train.ConfigError, checkpoints.CheckpointMismatchError)


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax (several lines per checkpoint)."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or '/orbax/' not in record.pathname)


def setup() -> None:
  """Quiets orbax's logs and keeps TensorFlow off the accelerators."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # tfds uses TensorFlow only to read data; keep it off the accelerators,
  # which belong to JAX.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')


@contextlib.contextmanager
def user_errors_exit():
  """Turns a `USER_ERRORS` exception into `error: ...` and exit status 1."""
  try:
    yield
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')
