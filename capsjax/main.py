r"""Trains and evaluates a CapsNet.

    python -m capsjax.main --config=configs/mnist.py --workdir=/tmp/capsnet

Override any config field with --config.FIELD=VALUE, e.g.
--config.model.routing_iters=1. A misspelt field is an error.
"""
from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from capsjax import cli
from capsjax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and '
                    'summary.json; rerunning with the same one resumes.')
config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/mnist.py.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  cli.setup()
  logging.info('JAX devices: %s', jax.devices())
  with cli.user_errors_exit():
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
