"""Tests for capsjax.checks: the typed checks of config values."""
import ml_collections
import pytest

from capsjax import checks
from capsjax import errors


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
