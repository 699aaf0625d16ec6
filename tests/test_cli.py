"""Tests for capsjax.cli: one-line errors, exit statuses, flag parsing.

In-process and fast; test_main.py runs the real commands end to end
(including a misspelt --config.FIELD).
"""
from absl import flags
from ml_collections import config_flags
import pytest

from capsjax import cli
from capsjax import errors


def test_error_line_is_one_line():
  assert cli.error_line('a\n  b\tc ') == 'error: a b c'
  assert cli.error_line(ValueError('x\ny')) == 'error: x y'


def test_user_errors_exit_with_status_1_and_one_line():
  with pytest.raises(SystemExit) as e:
    with cli.user_errors_exit():
      raise errors.ConfigError('config.x must be 1,\n got 2; set --config.x=1.')
  assert e.value.code == 'error: config.x must be 1, got 2; set --config.x=1.'


def test_preempted_exits_with_its_own_status(capsys):
  with pytest.raises(SystemExit) as e:
    with cli.user_errors_exit():
      raise errors.Preempted('SIGTERM at step 3;\n rerun to resume.')
  assert e.value.code == cli.EXIT_PREEMPTED
  assert capsys.readouterr().err == 'stopped: SIGTERM at step 3; rerun to resume.\n'


def test_other_errors_keep_their_traceback():
  with pytest.raises(KeyError):
    with cli.user_errors_exit():
      raise KeyError('a bug')


def _flag_values():
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', lock_config=True,
                                  flag_values=values)
  flags.DEFINE_bool('distributed', False, '', flag_values=values)
  for name in cli.DISTRIBUTED_FLAGS:
    flags.DEFINE_string(name, None, '', flag_values=values)
  return values


def _parse_error(*args):
  with pytest.raises(SystemExit) as e:
    cli.parse_flags(['prog', *args], _flag_values())
  return str(e.value.code)


def test_a_missing_config_file_is_one_line():
  message = _parse_error('--config=configs/nope.py')
  assert message.startswith('error: cannot load --config=configs/nope.py'), (
      message)
  assert '\n' not in message


def test_an_unknown_flag_is_one_line():
  message = _parse_error('--no_such_flag=1')
  assert message.startswith('error: ') and 'no_such_flag' in message
  assert message.endswith('(--helpfull lists them).')


def test_distributed_options_need_distributed():
  values = _flag_values()
  values(['prog', '--num_processes=2'])
  with pytest.raises(SystemExit) as e:
    cli.check_distributed_flags(values)
  assert str(e.value.code) == ('error: --num_processes is for multi-host runs '
                               'only; add --distributed.')
  values(['prog', '--num_processes=2', '--distributed'])
  cli.check_distributed_flags(values)  # no exit

