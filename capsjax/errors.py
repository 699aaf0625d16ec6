"""Every error a user can fix from the command line, under one base class.

The command lines (`capsjax.main`, `experiments/*.py`) catch `UserError` and
print its message as one line, `error: ...`, with exit status 1. Each message
names what is wrong and the flag or file that fixes it. Anything else is a bug
and keeps its traceback.

`Preempted` is not a mistake: a run stopped on request (SIGTERM, SIGINT) with
a checkpoint to resume from; the command lines exit with `cli.EXIT_PREEMPTED`.
"""


def first_line(text) -> str:
  """The first line of `text` (e.g. another library's error), for quoting it
  in a one-line message; '' if it is empty."""
  text = str(text).strip()
  return text.splitlines()[0] if text else ''


class UserError(Exception):
  """A mistake the user can fix: a config value, data, a workdir, a shape."""


class ConfigError(UserError, ValueError):
  """A config value or workdir that cannot work, with the fix in the message."""


class DataError(UserError, ValueError):
  """A dataset cannot be loaded or batched as configured."""


class InputShapeError(UserError, ValueError):
  """The images do not fit the model's convolutions or its input_shape."""


class CheckpointMismatchError(UserError, ValueError):
  """The checkpoint in the workdir does not fit the model the config builds."""


class CheckpointCorruptError(UserError, ValueError):
  """A checkpoint (or, when restoring the latest, every one) is damaged."""


class NonFiniteError(UserError, FloatingPointError):
  """Training produced a NaN or infinite loss, gradient or parameter."""


class DiskFullError(UserError, OSError):
  """A checkpoint or metrics file did not fit on the workdir's file system."""


class VersionError(UserError, ValueError):
  """A workdir written by a capsjax version this one cannot read."""


class Preempted(Exception):
  """Training stopped on a signal after saving a checkpoint; rerun to resume."""
