r"""Trains and evaluates a CapsNet.

    python -m capsjax.main --config=configs/mnist.py --workdir=/tmp/capsnet

Override any config field with --config.FIELD=VALUE, e.g.
--config.model.routing_iters=1. A misspelt field is an error.

Every mistake a user can fix (a bad flag or config value, unusable data, a
workdir that cannot be written, a checkpoint of another model, a diverged
run) ends the program with exit status 1 and one line, `error: ...`, that says
what is wrong and how to fix it.

All visible devices are used. For several hosts, run the same command on each
with --distributed (see the README, "Multiple devices and hosts").
"""
import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from capsjax import cli
from capsjax import cpu_runtime
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
USER_ERRORS = cli.USER_ERRORS
error_line = cli.error_line


def run(config, workdir: str):
  """`train.train_and_evaluate`, exiting with one line on a user error.

  Returns:
    What `train.train_and_evaluate` returns.

  Raises:
    SystemExit: with `error_line(e)` as its code (so Python prints it and
      exits with status 1) for any of `USER_ERRORS`.
  """
  with cli.user_errors_exit():
    return train.train_and_evaluate(config, workdir)


def _unknown_field_message(error: Exception, argv: list[str]) -> str | None:
  """The one-line message for an override of a missing field, else None."""
  # ml_collections says "'name'\nDid you mean "other" instead of "name"?",
  # sometimes as a repr with escaped quotes and newline.
  text = str(error).replace('\\n', ' ').replace("\\'", "'")
  match = re.search(r"'(\w+)'", text)
  name = match.group(1) if match else None
  overrides = [a.split('=', 1)[0] for a in argv if a.startswith('--config.')]
  named = [flag for flag in overrides if name in flag.split('.')]
  if not named:
    return None  # Not about an override, e.g. a bug in the config file.
  flag = named[0]
  hint = re.search(r'Did you mean "(\w+)"', text)
  hint = f' (did you mean {hint.group(1)!r}?)' if hint else ''
  return (f'{flag}: the config has no field {name!r}{hint}; fix the name '
          f'(configs/mnist.py lists every field).')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag, field or config file in one line."""
  try:
    args = FLAGS(argv)
    # A config file that failed to load raises only when it is first read.
    FLAGS.config.get('seed')
  except flags.Error as e:
    sys.exit(error_line(f'{str(e).rstrip(".")}; fix the flag (--helpfull '
                        f'lists them).'))
  except (AttributeError, KeyError) as e:
    message = _unknown_field_message(e, argv)
    if message is None:
      raise
    sys.exit(error_line(message))
  except OSError as e:
    # From argv: the flag is not marked parsed when an override failed.
    filename = next((a.split('=', 1)[1] for a in argv
                     if a.startswith('--config=')), 'FILE')
    reason = e.__cause__ or e
    reason = getattr(reason, 'strerror', None) or str(reason).split('\n')[-1]
    sys.exit(error_line(f'cannot load --config={filename} ({reason.strip()});'
                        f' pass a config file such as configs/mnist.py.'))
  return args


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
  cpu_runtime.configure()  # Before JAX runs anything (cli.setup repeats it).
  # Before any other JAX call: it decides which devices this process sees.
  _maybe_initialize_distributed()
  cli.setup()
  run(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
