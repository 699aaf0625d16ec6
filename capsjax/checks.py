"""Typed checks of config values: the one place that says what a valid value is.

Each check takes the value and its dotted field name (`'model.routing_iters'`)
and raises `errors.ConfigError` (or the `error` class given) with one line
naming `config.FIELD`, what it must be, what it was, and a `--config.FIELD=...`
that works. Library code that is not driven by a config passes its own name
(`'batch_size'`) and `error=errors.DataError`.
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


def _fail(error, field: str, must: str, value, fix) -> None:
  raise error(f'config.{field} must be {must}, got {value!r}; set '
              f'--config.{field}={fix}.')


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
              low_open: bool = False, error=errors.ConfigError) -> float:
  """`value` as a float if it is a finite number in `[low, high]`
  (`(low, high]` with `low_open`)."""
  ok = is_number(value) and value <= high and (
      value > low if low_open else value >= low)
  if not ok:
    _fail(error, field, f'a number in {"(" if low_open else "["}{low}, {high}]',
          value, example)
  return float(value)


def boolean(value, field: str, *, error=errors.ConfigError) -> bool:
  """`value` if it is True or False."""
  if not isinstance(value, bool):
    _fail(error, field, 'True or False', value, False)
  return value


def choice(value, field: str, allowed: Sequence, *,
           error=errors.ConfigError):
  """`value` if it is one of `allowed` (bools never match an int choice)."""
  if isinstance(value, bool) or value not in tuple(allowed):
    _fail(error, field, f'one of {", ".join(map(str, allowed))}', value,
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
