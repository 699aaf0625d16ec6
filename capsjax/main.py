r"""Trains and evaluates a CapsNet.

    python -m capsjax.main --config=configs/mnist.py --workdir=/tmp/capsnet

Override any config field with --config.FIELD=VALUE, e.g.
--config.model.routing_iters=1. A misspelt field is an error.

All visible devices are used. For several hosts, run the same command on each
with --distributed (see the README, "Multiple devices and hosts").
"""
import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from capsjax import checkpoints
from capsjax import input_pipeline
from capsjax import models
from capsjax import parallel
from capsjax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and '
                    'summary.json; rerunning with the same one resumes.')
config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/mnist.py.', lock_config=True)
flags.DEFINE_bool(
    'distributed', False, 'Multi-host run: connect to the other processes with '
    'jax.distributed.initialize() first. Detected automatically on Slurm, Open '
    'MPI, Kubernetes and Cloud TPU; elsewhere also pass the three flags below.')
flags.DEFINE_string('coordinator_address', None, 'With --distributed: '
                    'HOST:PORT of process 0 (or set JAX_COORDINATOR_ADDRESS).')
flags.DEFINE_integer('num_processes', None, 'With --distributed: the number '
                     'of processes (hosts) in the run.', lower_bound=1)
flags.DEFINE_integer('process_id', None, 'With --distributed: this process, '
                     '0 .. num_processes - 1.', lower_bound=0)
flags.mark_flags_as_required(['config', 'workdir'])

_DISTRIBUTED_FLAGS = ('coordinator_address', 'num_processes', 'process_id')

# Errors the user can fix from the command line: reported in one line.
USER_ERRORS = (input_pipeline.DataError, models.InputShapeError,
               train.ConfigError, checkpoints.CheckpointMismatchError)


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax (several lines per checkpoint)."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or '/orbax/' not in record.pathname)


def _maybe_initialize_distributed() -> None:
  given = [f'--{name}' for name in _DISTRIBUTED_FLAGS
           if FLAGS[name].value is not None]
  if not FLAGS.distributed:
    if given:
      sys.exit(f'error: {", ".join(given)} {"is" if len(given) == 1 else "are"}'
               f' for multi-host runs only; add --distributed.')
    return
  try:
    parallel.initialize_distributed(FLAGS.coordinator_address,
                                    FLAGS.num_processes, FLAGS.process_id)
  except ValueError as e:
    # JAX found no Slurm/Open MPI/TPU cluster and lacks an argument.
    sys.exit(f'error: --distributed cannot start ({str(e).rstrip(".")}); pass '
             f'--coordinator_address=HOST:PORT --num_processes=N '
             f'--process_id=I on every host, or launch under Slurm, Open MPI '
             f'or a Cloud TPU pod.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  # Before any other JAX call: it decides which devices this process sees.
  _maybe_initialize_distributed()
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # tfds uses TensorFlow only to read data; keep it off the accelerators,
  # which belong to JAX.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX devices: %s', jax.devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
