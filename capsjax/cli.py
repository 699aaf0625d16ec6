"""What every capsjax command line shares: start-up, quiet logs, one-line errors.

Used by `capsjax/main.py` and the scripts in `experiments/`. Defines no flags,
so importing it never clashes with a script's own flags. It imports nothing
heavy: a bad flag is reported before JAX, orbax or TensorFlow load.
"""
import contextlib
import logging as std_logging
import re
import sys

from absl import flags
from absl import logging

from capsjax import cpu_runtime
from capsjax import errors

# The exit status of a run stopped by SIGTERM or SIGINT after saving a
# checkpoint: sysexits.h's EX_TEMPFAIL, "try again later", which no other
# outcome uses (0 done, 1 `error:`, 2 bad usage, 128 + N killed by signal N).
EXIT_PREEMPTED = 75

# The options a multi-host run passes to jax.distributed.initialize().
DISTRIBUTED_FLAGS = ('coordinator_address', 'num_processes', 'process_id')


def error_line(problem) -> str:
  """`problem` (an exception or text) as the one line the user sees."""
  return 'error: ' + ' '.join(str(problem).split())


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax (several lines per checkpoint), and the
  tracebacks of its errors: the error reaches capsjax, which reports it (a
  full disk as one line), and each of orbax's threads would print it again."""

  def filter(self, record):
    if '/orbax/' not in record.pathname:
      return True
    record.exc_info, record.exc_text = None, None
    return record.levelno >= std_logging.WARNING


def _drop_closed_loop_reports(unraisable, default=sys.unraisablehook):
  # When orbax fails to read a damaged checkpoint it closes its event loop
  # while tensorstore finishes the other reads, and each of those reports
  # "Event loop is closed" with a traceback. The read error itself is
  # handled (a warning and the previous checkpoint), so these say nothing.
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
    return
  default(unraisable)


def setup(distributed: bool = False, **distributed_args) -> None:
  """Call first in a command line's main(), before JAX runs anything.

  Sets the XLA:CPU flag of `cpu_runtime`, joins a multi-host run when
  `distributed` (`jax.distributed.initialize(**distributed_args)`, which must
  come before any other JAX call), then tunes malloc if the backend is the
  CPU, and quiets orbax's logs.
  """
  tuned = cpu_runtime.configure()
  if distributed:
    _initialize_distributed(**distributed_args)
  import jax  # pylint: disable=g-import-not-at-top
  tuned += cpu_runtime.tune_malloc_for_cpu(jax.default_backend())
  logging.get_absl_handler().addFilter(_QuietLibraries())
  sys.unraisablehook = _drop_closed_loop_reports
  logging.info('JAX devices: %s', jax.devices())
  if tuned:
    logging.info('CPU tuning (see capsjax/cpu_runtime.py): %s.',
                 '; '.join(tuned))


def _initialize_distributed(**args) -> None:
  from capsjax import parallel  # pylint: disable=g-import-not-at-top
  try:
    parallel.initialize_distributed(**args)
  except ValueError as e:
    # JAX found no Slurm/Open MPI/TPU cluster and lacks an argument.
    sys.exit(error_line(
        f'--distributed cannot start ({str(e).rstrip(".")}); pass '
        f'--coordinator_address=HOST:PORT --num_processes=N --process_id=I on '
        f'every host, or launch under Slurm, Open MPI or a Cloud TPU pod.'))


def check_distributed_flags(flag_values: flags.FlagValues) -> None:
  """Exits with one line if a multi-host option is given without --distributed."""
  given = [f'--{name}' for name in DISTRIBUTED_FLAGS
           if flag_values[name].value is not None]
  if given and not flag_values.distributed:
    sys.exit(error_line(
        f'{", ".join(given)} {"is" if len(given) == 1 else "are"} for '
        f'multi-host runs only; add --distributed.'))


@contextlib.contextmanager
def user_errors_exit():
  """Turns an `errors.UserError` into `error: ...` and exit status 1, and
  `errors.Preempted` into `stopped: ...` and `EXIT_PREEMPTED`."""
  try:
    yield
  except errors.UserError as e:
    sys.exit(error_line(e))
  except errors.Preempted as e:
    print('stopped: ' + ' '.join(str(e).split()), file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)


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


def parse_flags(argv: list[str],
                flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl's flag parsing, with a bad flag, field or config file in one line.

  For `app.run(main, flags_parser=cli.parse_flags)`; a `--config` flag, if
  defined, is loaded here so that its errors are reported here too.
  """
  try:
    args = flag_values(argv)
    if 'config' in flag_values and flag_values['config'].value is not None:
      # A config file that failed to load raises only when it is first read.
      flag_values.config.get('seed')
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
