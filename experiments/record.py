r"""Runs an experiment of experiments/plan.py and records it.

    python experiments/record.py list
    python experiments/record.py run NAME [--workdir=DIR] [-- --config.F=V ...]
    python experiments/record.py table KEY

`run` trains the plan's run NAME in-process with
`capsjax.train.train_and_evaluate` in DIR (default experiments/workdirs/NAME)
and then writes its record, experiments/results/NAME.json. A run that was
interrupted resumes from its checkpoint when the command is repeated and is
recorded once, when it finishes; repeating a finished run trains nothing and
rewrites the same record. Arguments after `--` are added to the plan's (and
recorded). An entry of kind 'affine_robustness' trains nothing: it tests the
entry's two finished runs at matched clean accuracy (`record_affine`).

`table KEY` runs every experiment of the plan's tables `TABLES[KEY]` in plan
order, e.g. `table fashion_models` for the routings and models side by side;
finished runs are only recorded again.

A record holds what the results page shows and what is needed to trust it:
the command and the capsjax.main arguments, the config, the summary
(wall_s sums every invocation of a resumed run, train_images_per_s,
num_params, ...), the test metrics of every evaluation, the plan's table,
row and published reference, and one entry per distinct environment that
trained it (commit and whether the tree was dirty, CPU model and cores, JAX
backend and device, versions). No per-step training logs.

docs/results.md is rendered from the records by experiments/report.py.
"""
import importlib.util
import json
import os
import platform
import runpy
import subprocess
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

import capsjax
from capsjax import cli
from capsjax import errors
from capsjax import metric_writers
from capsjax import train
from capsjax import validation
from capsjax import workdir as workdir_lib

FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN_FILE = os.path.join(ROOT, 'experiments', 'plan.py')
RESULTS_DIR = os.path.join(ROOT, 'experiments', 'results')
WORKDIRS = os.path.join(ROOT, 'experiments', 'workdirs')
# Kept in the workdir across the invocations of a resumed run.
INVOCATIONS = 'record_invocations.json'
FORMAT = 1


def load_plan(path: str = PLAN_FILE) -> dict:
  """`EXPERIMENTS` of the plan file: name -> experiment dict."""
  return runpy.run_path(path)['EXPERIMENTS']


def load_tables(path: str = PLAN_FILE) -> dict:
  """`TABLES` of the plan file: key -> the titles of its tables."""
  return runpy.run_path(path)['TABLES']


def experiment(name: str, plan: Optional[dict] = None) -> dict:
  """The plan's experiment `name`, or a ConfigError naming the choices."""
  plan = load_plan() if plan is None else plan
  if name not in plan:
    raise errors.ConfigError(
        f'no experiment {name!r} in experiments/plan.py; use one of '
        f'{", ".join(sorted(plan))} (record.py list).')
  return plan[name]


def parse_config(args: Sequence[str]):
  """The config capsjax.main builds from `args` (`--config=...` and overrides).

  A config file named relative to the repository is found from any working
  directory. A bad flag or field exits with one line, as in capsjax.main.
  """
  argv = ['record.py']
  for arg in args:
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1]
      if not os.path.isabs(path):
        path = os.path.join(ROOT, path)
      arg = '--config=' + path
    argv.append(arg)
  flag_values = flags.FlagValues()
  # sys_argv: the overrides are read from these arguments, not sys.argv.
  config_flags.DEFINE_config_file('config', None, 'Config file.',
                                  flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  rest = cli.parse_flags(argv, flag_values)
  if len(rest) > 1 or flag_values.config is None:
    raise errors.ConfigError(
        f'cannot read the run arguments {" ".join(args)}; pass --config=FILE '
        f'and --config.FIELD=VALUE overrides only.')
  return flag_values.config


def _git(*args) -> Optional[str]:
  try:
    return subprocess.run(['git', '-C', ROOT, *args], check=True,
                          capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def cpu_model() -> str:
  """lscpu's "Model name", else /proc/cpuinfo's, else platform's."""
  try:
    out = subprocess.run(['lscpu'], check=True, capture_output=True,
                         text=True, env={'LC_ALL': 'C'}).stdout
    for line in out.splitlines():
      if line.startswith('Model name:'):
        return line.split(':', 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment() -> dict:
  """Where this invocation runs: commit, machine, JAX device, versions."""
  # Records and workdirs change as runs finish; they do not make code dirty.
  status = _git('status', '--porcelain', '--untracked-files=no', '--', '.',
                ':!experiments/results')
  device = jax.devices()[0]
  return {
      # A copy of the tree without .git (a lent GPU machine) names it so.
      'commit': (_git('rev-parse', 'HEAD') or
                 os.environ.get('CAPSJAX_COMMIT')),
      'dirty': None if status is None else bool(status),
      'cpu_model': cpu_model(),
      'cpu_cores': len(os.sched_getaffinity(0)),
      'backend': jax.default_backend(),
      'device_kind': device.device_kind,
      'device_count': jax.device_count(),
      'jax': jax.__version__,
      'capsjax': capsjax.__version__,
      'python': platform.python_version(),
  }


def evaluations(workdir: str, batch_size: int,
                train_examples: int) -> list[dict]:
  """The test metrics of every evaluation in WORKDIR/metrics.jsonl, by step.

  Each is `{'step', 'epoch', metric: value}`.
  """
  return [{**entry, 'epoch': entry['step'] * batch_size / train_examples}
          for entry in metric_writers.read_split(workdir, 'test')]


def _finished_summary(config, workdir: str) -> Optional[dict]:
  """WORKDIR's summary if it finished training exactly `config`, else None.

  What train_and_evaluate would return without training; reading it here
  spares loading the data and building the model.
  """
  summary = workdir_lib.read_json(workdir_lib.path(workdir,
                                                   workdir_lib.SUMMARY))
  trained = workdir_lib.read_json(workdir_lib.path(workdir,
                                                   workdir_lib.CONFIG))
  if (summary and summary.get('steps') == config.num_train_steps and
      trained == json.loads(json.dumps(config.to_dict()))):
    return summary
  return None


def _note_invocation(workdir: str) -> list[dict]:
  """Adds this environment to WORKDIR's list (once) and returns the list."""
  path = workdir_lib.path(workdir, INVOCATIONS)
  seen = workdir_lib.read_json(path) or []
  here = environment()
  if here not in seen:
    seen.append(here)
    workdir_lib.write_json(path, seen)
  return seen


def record(name: str, plan_entry: dict, workdir: str,
           results_dir: str = RESULTS_DIR, extra_args: Sequence[str] = (),
           command: Optional[str] = None) -> dict:
  """Trains (or resumes) the run and writes `results_dir/NAME.json`.

  Args:
    name: the experiment's name; the record's file name.
    plan_entry: the plan's experiment (table, row, args, scale, reference).
    workdir: the run's workdir; an interrupted run resumes from it.
    results_dir: where the record goes.
    extra_args: capsjax.main arguments added after the plan's.
    command: the command line to record (default: `record.py run NAME`).

  Returns:
    The record.

  Raises:
    errors.UserError: from the config or the training; no record is written.
  """
  args = [*plan_entry['args'], *extra_args]
  config = parse_config(args)
  workdir = os.path.abspath(workdir)
  validation.check_config(config)
  os.makedirs(workdir, exist_ok=True)
  summary = _finished_summary(config, workdir)
  if summary is not None:
    # Nothing is trained now; a run finished without the recorder has no
    # known environment.
    invocations = workdir_lib.read_json(
        workdir_lib.path(workdir, INVOCATIONS)) or []
  else:
    invocations = _note_invocation(workdir)
    _, summary = train.train_and_evaluate(config, workdir)
  entry = {
      'format': FORMAT,
      'name': name,
      'table': plan_entry['table'],
      'row': plan_entry['row'],
      'scale': plan_entry['scale'],
      'reference': plan_entry.get('reference'),
      'command': command or ' '.join(
          ['python experiments/record.py run', name] +
          (['--', *extra_args] if extra_args else [])),
      'args': args,
      'config': config.to_dict(),
      'invocations': invocations,
      'summary': summary,
      'evaluations': evaluations(workdir, config.batch_size,
                                 summary['train_examples']),
  }
  os.makedirs(results_dir, exist_ok=True)
  # Through JSON once, so that the record returned is the record on disk.
  entry = json.loads(json.dumps(entry))
  workdir_lib.write_json(os.path.join(results_dir, f'{name}.json'), entry)
  return entry


def _script(name: str):
  """experiments/NAME.py as a module (the experiments are scripts)."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, 'experiments', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def record_affine(name: str, plan_entry: dict, plan: dict,
                  workdirs_dir: str = WORKDIRS,
                  results_dir: str = RESULTS_DIR) -> dict:
  """Tests the plan entry's two finished runs on the affine set at matched
  clean accuracy and writes `results_dir/NAME.json`.

  The runs are the plan's experiments `plan_entry['runs']`, trained in
  `workdirs_dir/RUN` (by `record.py run RUN`); experiments/
  affine_robustness.py's `evaluate(..., match_clean=True)` picks their
  checkpoints and writes its table and figure to `workdirs_dir/NAME`.

  Raises:
    errors.UserError: a run has not finished, or the evaluation fails.
  """
  workdirs = []
  for run in plan_entry['runs']:
    workdir = os.path.join(workdirs_dir, run)
    if not os.path.exists(workdir_lib.path(workdir, workdir_lib.SUMMARY)):
      raise errors.ConfigError(
          f'{name} tests the finished run {run}, which is not in {workdir}; '
          f'first run python experiments/record.py run {run}.')
    workdirs.append(workdir)
  start = time.time()
  rows = _script('affine_robustness').evaluate(
      workdirs, os.path.join(workdirs_dir, name), match_clean=True)
  entry = {
      'format': FORMAT,
      'kind': 'affine_robustness',
      'name': name,
      'table': plan_entry['table'],
      'scale': plan_entry['scale'],
      'reference': plan_entry['reference'],
      'command': f'python experiments/record.py run {name}',
      'invocations': [environment()],
      'wall_s': time.time() - start,
      'rows': [{'run': run, 'row': plan[run]['row'],
                **{k: row[k] for k in ('model', 'steps', 'clean_accuracy',
                                       'affine_accuracy', 'clean_examples',
                                       'affine_examples')}}
               for run, row in zip(plan_entry['runs'], rows)],
  }
  os.makedirs(results_dir, exist_ok=True)
  entry = json.loads(json.dumps(entry))
  workdir_lib.write_json(os.path.join(results_dir, f'{name}.json'), entry)
  return entry


def run_and_print(name: str, plan: dict, extra: Sequence[str] = (),
                  workdir: Optional[str] = None,
                  results_dir: str = RESULTS_DIR) -> dict:
  """Records the plan's experiment NAME (trained in WORKDIRS/NAME unless
  `workdir` is given) and prints its result in a line per row."""
  entry = experiment(name, plan)
  if entry.get('kind') == 'affine_robustness':
    if extra or workdir:
      raise errors.ConfigError(
          f'{name} tests finished runs; it takes no --workdir or config '
          f'arguments.')
    result = record_affine(name, entry, plan, results_dir=results_dir)
    for row in result['rows']:
      print(f'{name}: {row["run"]} at step {row["steps"]}: clean '
            f'{100 * row["clean_accuracy"]:.2f}%, affine '
            f'{100 * row["affine_accuracy"]:.2f}%')
    return result
  result = record(name, entry, workdir or os.path.join(WORKDIRS, name),
                  results_dir, extra)
  summary = result['summary']
  print(f'{name}: test accuracy {100 * summary["test_accuracy"]:.2f}% '
        f'after {summary["steps"]} steps; recorded in '
        f'{os.path.join(results_dir, name)}.json')
  return result


def table_names(key: str, plan: dict, tables: dict) -> list[str]:
  """The plan's experiments in the tables `tables[key]`, in plan order."""
  if key not in tables:
    raise errors.ConfigError(
        f'no table {key!r} in experiments/plan.py; use one of '
        f'{", ".join(tables)}.')
  return [name for name, entry in plan.items()
          if entry['table'] in tables[key]]


def main(argv):
  with cli.user_errors_exit():
    if len(argv) < 2 or argv[1] not in ('list', 'run', 'table'):
      raise errors.ConfigError(
          'pass a command: record.py list, record.py run NAME [-- '
          '--config.F=V ...], or record.py table KEY.')
    plan = load_plan()
    if argv[1] == 'list':
      tables = load_tables()
      for key in tables:
        print(f'table {key}: {", ".join(table_names(key, plan, tables))}')
      for name in sorted(plan):
        entry = plan[name]
        print(f'{name}: ' + (f'tests {", ".join(entry["runs"])}'
                             if 'runs' in entry else ' '.join(entry['args'])))
      return
    if len(argv) < 3:
      raise errors.ConfigError(f'record.py {argv[1]} needs a NAME or KEY '
                               f'(record.py list shows them).')
    cli.setup()
    if argv[1] == 'table':
      if len(argv) > 3 or FLAGS.workdir:
        raise errors.ConfigError(
            'record.py table KEY runs the plan\'s commands as they are; '
            'pass no --workdir or config arguments.')
      for name in table_names(argv[2], plan, load_tables()):
        run_and_print(name, plan, results_dir=FLAGS.results_dir)
      return
    extra = argv[3:]
    if extra and extra[0] == '--':
      extra = extra[1:]
    run_and_print(argv[2], plan, extra, FLAGS.workdir, FLAGS.results_dir)


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the flags; only when run as a script (tests import the module)."""
  flags.DEFINE_string('workdir', None, 'The run\'s workdir; default '
                      'experiments/workdirs/NAME.', flag_values=flag_values)
  flags.DEFINE_string('results_dir', RESULTS_DIR, 'Where records go.',
                      flag_values=flag_values)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
