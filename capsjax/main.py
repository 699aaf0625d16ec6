r"""Trains and evaluates a CapsNet.

    python -m capsjax.main --config=configs/mnist.py --workdir=/tmp/capsnet

Override any config field with --config.FIELD=VALUE, e.g.
--config.model.routing_iters=1. A misspelt field is an error.

Every mistake a user can fix (a bad flag or config value, unusable data, a
workdir that cannot be written, a checkpoint of another model, a diverged
run) ends the program with exit status 1 and one line, `error: ...`, that says
what is wrong and how to fix it.
"""
import logging as std_logging
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from capsjax import checkpoints
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
               train.ConfigError, train.NonFiniteError,
               checkpoints.CheckpointMismatchError,
               checkpoints.CheckpointCorruptError)


def error_line(problem) -> str:
  """`problem` (an exception or text) as the one line the user sees."""
  return 'error: ' + ' '.join(str(problem).split())


def run(config, workdir: str):
  """`train.train_and_evaluate`, exiting with one line on a user error.

  Returns:
    What `train.train_and_evaluate` returns.

  Raises:
    SystemExit: with `error_line(e)` as its code (so Python prints it and
      exits with status 1) for any of `USER_ERRORS`.
  """
  try:
    return train.train_and_evaluate(config, workdir)
  except USER_ERRORS as e:
    sys.exit(error_line(e))


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  sys.unraisablehook = _drop_closed_loop_reports
  # tfds uses TensorFlow only to read data; keep it off the accelerators,
  # which belong to JAX.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX devices: %s', jax.devices())
  run(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
