"""Typed checks of config values: the one place that says what a valid value is.

Each check takes the value and its dotted field name (`'model.routing_iters'`)
and raises `errors.ConfigError` (or the `error` class given) with one line
naming `config.FIELD`, what it must be, what it was, and a `--config.FIELD=...`
that works. Library code that is not driven by a config passes its own
argument's name (`'batch_size'`, no dot) and `error=errors.DataError`; its
message then names the argument instead of a flag.
"""
import math
import operator
from typing import Optional, Sequence

from capsjax import errors


def is_int(value) -> bool:
  """An int (numpy ints included), but not a bool: `True` as a size is a bug."""
  if isinstance(value, bool):
    return False
  try:
    operator.index(value)
  except TypeError:
    return False
  return True


def is_number(value) -> bool:
  """A finite int or float, but not a bool."""
  return ((is_int(value) or isinstance(value, float))
          and math.isfinite(value))


def image_shape(input_shape: Sequence[int]) -> None:
  """Raises errors.InputShapeError unless `input_shape` is (H, W, C)."""
  if len(input_shape) != 3:
    raise errors.InputShapeError(
        f'input_shape must be (H, W, C), got {tuple(input_shape)}; give images '
        f'as [B, H, W, C].')


def _fail(error, field: str, must: str, value, fix) -> None:
  if issubclass(error, errors.ConfigError) or '.' in field:
    raise error(f'config.{field} must be {must}, got {value!r}; set '
                f'--config.{field}={fix}.')
  # A library argument, not a config field: no flag sets it.
  raise error(f'{field} must be {must}, got {value!r}; pass {field}={fix}.')


def field(config, name: str, section: str = 'dataset', *,
          error=errors.DataError):
  """`config.NAME` of the `config.SECTION` block `config`.

  Raises:
    error: the block has no such field (a config written by hand, or one
      older than the field).
  """
  try:
    return getattr(config, name)
  except AttributeError:
    raise error(
        f'the {section} config has no field {name!r}; add '
        f'config.{section}.{name} (see configs/mnist.py for all fields).'
    ) from None


def string(value, field_name: str, example: str = "''", *,
           allow_empty: bool = True, error=errors.ConfigError) -> str:
  """`value` if it is a string (and not empty unless `allow_empty`)."""
  if not isinstance(value, str) or not (value or allow_empty):
    _fail(error, field_name, 'a non-empty string' if not allow_empty
          else 'a string', value, example)
  return value


def int_at_least(value, field: str, minimum: int = 1, example=None, *,
                 why: str = '', error=errors.ConfigError) -> int:
  """`value` as an int if it is one and `>= minimum`."""
  if not is_int(value) or value < minimum:
    _fail(error, field, f'an int >= {minimum}{why}', value,
          'N' if example is None else example)
  return operator.index(value)


def int_in(value, field: str, low: int, high: int, example, *,
           error=errors.ConfigError) -> int:
  """`value` as an int if it is one in `[low, high]`."""
  if not is_int(value) or not low <= value <= high:
    _fail(error, field, f'an int in [{low}, {high}]', value, example)
  return operator.index(value)


def number_in(value, field: str, low: float, high: float, example, *,
              low_open: bool = False, high_open: bool = False,
              error=errors.ConfigError) -> float:
  """`value` as a float if it is a finite number in `[low, high]`
  (`(low, ...` with `low_open`, `..., high)` with `high_open`)."""
  ok = (is_number(value)
        and (value < high if high_open else value <= high)
        and (value > low if low_open else value >= low))
  if not ok:
    _fail(error, field, f'a number in {"(" if low_open else "["}{low}, {high}'
          f'{")" if high_open else "]"}', value, example)
  return float(value)


def boolean(value, field: str, *, error=errors.ConfigError) -> bool:
  """`value` if it is True or False."""
  if not isinstance(value, bool):
    _fail(error, field, 'True or False', value, False)
  return value


def choice(value, field: str, allowed: Sequence, *, why: str = '',
           error=errors.ConfigError):
  """`value` if it is one of `allowed` (bools never match an int choice).

  `allowed` is read at each call, so a registry dict that grows is seen.
  """
  if isinstance(value, bool) or value not in tuple(allowed):
    _fail(error, field, f'one of {", ".join(map(str, allowed))}{why}', value,
          tuple(allowed)[0])
  return value


def int_tuple(value, field: str, *, length: Optional[int] = None,
              allow_empty: bool = False, example: str = '(...)',
              error=errors.ConfigError) -> tuple[int, ...]:
  """`value` as a tuple of ints >= 1, of `length` entries if given."""
  items = tuple(value) if isinstance(value, (tuple, list)) else None
  if (items is None or (not items and not allow_empty)
      or not all(is_int(w) and w >= 1 for w in items)
      or (length is not None and len(items) != length)):
    size = f'{length} ' if length is not None else ''
    _fail(error, field, f'a tuple of {size}ints >= 1', value, f"'{example}'")
  return tuple(operator.index(w) for w in items)
