r"""Trains and evaluates a model.

    python -m capsjax.main --config=configs/mnist.py --workdir=/tmp/capsnet

Override any config field with --config.FIELD=VALUE, e.g.
--config.model.routing_iters=1. A misspelt field is an error.

Every mistake a user can fix (a bad flag or config value, unusable data, a
workdir that cannot be written, a checkpoint of another model, a diverged
run, a full disk) ends the program with exit status 1 and one line, `error: ...`,
that says what is wrong and how to fix it; a refused config leaves the workdir
as it was.

SIGTERM or SIGINT (preemption, Ctrl-C) stops training after the step in
progress: a checkpoint and the metrics so far are saved, one line,
`stopped: ...`, says the step and how to resume, and the exit status is 75
(`cli.EXIT_PREEMPTED`). A second signal exits at once with 128 + its number;
the newest complete checkpoint is kept. Rerunning the same command resumes.

All visible devices are used. For several hosts, run the same command on each
with --distributed (see docs/multihost.md).
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from capsjax import cli

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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  cli.check_distributed_flags(FLAGS)
  cli.setup(FLAGS.distributed, **{name: FLAGS[name].value
                                  for name in cli.DISTRIBUTED_FLAGS})
  # Imported after setup: the XLA flags must be set before JAX starts.
  from capsjax import train  # pylint: disable=g-import-not-at-top
  with cli.user_errors_exit():
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
