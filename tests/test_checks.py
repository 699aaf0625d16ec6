"""Tests for capsjax.checks: each check's accepted and refused values."""
import ml_collections
import numpy as np
import pytest

from capsjax import checks
from capsjax import errors


def test_is_int_and_is_number():
  assert checks.is_int(3) and checks.is_int(np.int64(3))
  assert not checks.is_int(True) and not checks.is_int(3.0)
  assert not checks.is_int('3')
  assert checks.is_number(3) and checks.is_number(0.5)
  assert not checks.is_number(float('nan')) and not checks.is_number(False)
  assert not checks.is_number(float('inf'))


def test_int_at_least():
  assert checks.int_at_least(np.int32(4), 'model.x') == 4
  assert checks.int_at_least(0, 'seed', 0) == 0
  with pytest.raises(errors.ConfigError) as e:
    checks.int_at_least(True, 'model.x')
  assert str(e.value) == ('config.model.x must be an int >= 1, got True; set '
                          '--config.model.x=N.')
  with pytest.raises(errors.ConfigError, match=r'an int >= 2 \(why\), got 1; '
                     r'set --config.y=5\.'):
    checks.int_at_least(1, 'y', 2, 5, why=' (why)')
  with pytest.raises(errors.DataError):
    checks.int_at_least(0, 'batch', error=errors.DataError)


def test_number_in():
  assert checks.number_in(1, 'a', 0, 1, 0.5) == 1.0
  assert checks.number_in(0, 'a', 0, 1, 0.5) == 0.0
  with pytest.raises(errors.ConfigError) as e:
    checks.number_in(0, 'a', 0, 1, 0.5, low_open=True)
  assert str(e.value) == ('config.a must be a number in (0, 1], got 0; set '
                          '--config.a=0.5.')
  with pytest.raises(errors.ConfigError, match=r'in \[0, 1\), got 1; '):
    checks.number_in(1, 'a', 0, 1, 0.5, high_open=True)
  assert checks.number_in(0.99, 'a', 0, 1, 0.5, high_open=True) == 0.99
  for bad in (float('nan'), True, '0.5', 1.5):
    with pytest.raises(errors.ConfigError):
      checks.number_in(bad, 'a', 0, 1, 0.5)


def test_boolean():
  assert checks.boolean(False, 'b') is False
  with pytest.raises(errors.ConfigError) as e:
    checks.boolean(1, 'b')
  assert str(e.value) == ('config.b must be True or False, got 1; set '
                          '--config.b=False.')


def test_choice():
  assert checks.choice('x', 'c', ('y', 'x')) == 'x'
  allowed = {'y': 0}
  with pytest.raises(errors.ConfigError) as e:
    checks.choice('x', 'c', allowed)
  assert str(e.value) == ("config.c must be one of y, got 'x'; set "
                          '--config.c=y.')
  allowed['x'] = 1  # A registry that grows is read at the call.
  assert checks.choice('x', 'c', allowed) == 'x'
  with pytest.raises(errors.ConfigError, match=r'one of 1, 2 \(digits\), got '
                     r'True'):
    checks.choice(True, 'n', (1, 2), why=' (digits)')


def test_int_tuple():
  assert checks.int_tuple([2, np.int64(3)], 't') == (2, 3)
  assert checks.int_tuple((), 't', allow_empty=True) == ()
  for bad in ((), (1, 0), (1.0,), 3, (True,)):
    with pytest.raises(errors.ConfigError, match='config.t must be a tuple'):
      checks.int_tuple(bad, 't')
  with pytest.raises(errors.ConfigError) as e:
    checks.int_tuple((1, 2), 't', length=3, example='(1, 2, 3)')
  assert str(e.value) == ("config.t must be a tuple of 3 ints >= 1, got "
                          "(1, 2); set --config.t='(1, 2, 3)'.")


def test_config_fields_name_the_flag_library_arguments_do_not():
  with pytest.raises(errors.ConfigError,
                     match=r'^config.dataset.max_shift must be an int >= 0, '
                     r'got -1; set --config.dataset.max_shift=2.$'):
    checks.int_at_least(-1, 'dataset.max_shift', 0, 2)
  with pytest.raises(errors.DataError,
                     match=r'^batch_size must be an int >= 1, got True; pass '
                     r'batch_size=1.$'):
    checks.int_at_least(True, 'batch_size', 1, 1, error=errors.DataError)


def test_number_in_open_and_closed_ends():
  assert checks.number_in(1.0, 'x.f', 0, 1, 0.5) == 1.0
  assert checks.number_in(0, 'x.f', 0, 1, 0.5) == 0.0
  with pytest.raises(errors.ConfigError, match=r'in \(0, 1\), got 1'):
    checks.number_in(1, 'x.f', 0, 1, 0.5, low_open=True, high_open=True)
  with pytest.raises(errors.ConfigError, match=r'in \(0, 1\], got 0'):
    checks.number_in(0, 'x.f', 0, 1, 0.5, low_open=True)
  with pytest.raises(errors.ConfigError, match='got nan'):
    checks.number_in(float('nan'), 'x.f', 0, 1, 0.5)


def test_string_and_field():
  assert checks.string('', 'dataset.name') == ''
  with pytest.raises(errors.ConfigError, match='a non-empty string'):
    checks.string('', 'dataset.name', allow_empty=False)
  with pytest.raises(errors.DataError, match='must be a string, got 3'):
    checks.string(3, 'dataset.name', error=errors.DataError)
  config = ml_collections.ConfigDict({'name': 'mnist'})
  assert checks.field(config, 'name') == 'mnist'
  with pytest.raises(errors.DataError,
                     match="the dataset config has no field 'source'; add "
                     'config.dataset.source'):
    checks.field(config, 'source')


def test_image_shape_is_h_w_c():
  checks.image_shape((28, 28, 1))
  for bad in ((28, 28), (1, 28, 28, 1)):
    with pytest.raises(errors.InputShapeError, match=r'\(H, W, C\)') as e:
      checks.image_shape(bad)
    assert '\n' not in str(e.value) and str(bad) in str(e.value)
