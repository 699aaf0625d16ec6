r"""Trains and evaluates a CapsNet.

    python -m capsjax.main --config=configs/mnist.py --workdir=/tmp/capsnet

Override any config field with --config.FIELD=VALUE, e.g.
--config.model.routing_iters=1. A misspelt field is an error.
"""
import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from capsjax import checkpoints
from capsjax import cpu_runtime
from capsjax import input_pipeline
from capsjax import models
from capsjax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and '
                    'summary.json; rerunning with the same one resumes.')
config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/mnist.py.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])

# Errors the user can fix from the command line: reported in one line.
USER_ERRORS = (input_pipeline.DataError, models.InputShapeError,
               train.ConfigError, checkpoints.CheckpointMismatchError)


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax (several lines per checkpoint)."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or '/orbax/' not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  tuned = cpu_runtime.configure()  # Before JAX runs anything.
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # tfds uses TensorFlow only to read data; keep it off the accelerators,
  # which belong to JAX.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX devices: %s', jax.devices())
  if tuned and jax.default_backend() == 'cpu':
    logging.info('CPU tuning (see capsjax/cpu_runtime.py): %s.',
                 '; '.join(tuned))
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
