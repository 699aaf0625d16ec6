r"""Sweeps of capsjax runs: the paper's Table 1 by default, or any fields.

    python experiments/routing_sweep.py --config=configs/quickstart.py \
        --sweep_dir=/tmp/capsnet_sweep --routing_iters=1,3 --recon=on,off --seeds=2

    python experiments/routing_sweep.py --config=configs/quickstart.py \
        --sweep_dir=/tmp/routings \
        --grid=model.routing=dynamic,self_attention,inverted_dot_product \
        --grid=model.routing_iters=1,3

With --grid=FIELD=V1,V2 (repeatable) the sweep is every combination of the
listed values of those config fields (x --seeds), instead of Table 1's
iterations x reconstruction (--routing_iters and --recon are then not used).
Values are parsed with the type the field has in the config (int, float,
bool, str, or a tuple such as '(16,32)'; commas inside brackets do not split).
Each run's workdir is SWEEP_DIR/FIELD=VALUE__...__seedS; its row in the
results is named by the fields' values read back from its config.json, and
results.md has one row per combination: mean +- std over seeds of the test
error, and the training speed.

Trains every combination of routing iterations (--routing_iters), reconstruction loss
on/off (--recon) and seed (--seeds=N: config.seed .. config.seed + N - 1) with
`capsjax.train.train_and_evaluate`, each in its own workdir
SWEEP_DIR/iters{R}_recon-{on|off}_seed{S}. Any config field can be overridden
with --config.FIELD=VALUE, e.g. --config.num_train_steps=200; the sweep sets
model.routing_iters, loss.reconstruction_weight and seed itself.
Reconstruction off is reconstruction_weight = 0 (the decoder is not run); on is
the config's weight, or the paper's 0.0005 if the config has 0.

Rerunning the command skips finished runs and resumes interrupted ones from
their checkpoints. After every run, and at the end, it rewrites from all
finished runs in SWEEP_DIR (Table 1: those with Table 1 run names; --grid:
all of them):

  SWEEP_DIR/results.csv     one row per run
  SWEEP_DIR/results.md      test error % as mean +- std over seeds
  SWEEP_DIR/test_error.png  test error against routing iterations (Table 1),
                            or per combination (--grid)
"""
import ast
import csv
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import os
import re
import statistics
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import matplotlib
matplotlib.use('Agg')  # Files only; no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import ml_collections
from ml_collections import config_flags

from capsjax import checks
from capsjax import cli
from capsjax import errors
from capsjax import train
from capsjax import validation
from capsjax import workdir as workdir_lib

FLAGS = flags.FLAGS

# Section 4.1: the reconstruction loss is scaled down by 0.0005.
PAPER_RECONSTRUCTION_WEIGHT = 0.0005

CSV_COLUMNS = ('run', 'routing_iters', 'reconstruction', 'seed',
               'test_error_pct', 'test_accuracy', 'test_loss', 'steps',
               'reconstruction_weight', 'test_examples', 'train_images_per_s',
               'wall_s', 'dataset')
PLOT_FILE = 'test_error.png'
PLOT_SIZE_INCHES, PLOT_DPI = (5, 3.5), 100  # 500 x 350 pixels

_RUN_NAME = re.compile(r'iters(\d+)_recon-(on|off)_seed(\d+)')


@dataclasses.dataclass(frozen=True)
class Run:
  """One combination of the sweep."""
  routing_iters: int
  reconstruction: bool
  seed: int

  @property
  def name(self) -> str:
    recon = 'on' if self.reconstruction else 'off'
    return f'iters{self.routing_iters}_recon-{recon}_seed{self.seed}'


@dataclasses.dataclass(frozen=True)
class GridRun:
  """One combination of a --grid sweep: `((field, value), ...)` and a seed."""
  values: tuple
  seed: int

  @property
  def name(self) -> str:
    parts = [f'{field}={_name_part(value)}' for field, value in self.values]
    return '__'.join(parts + [f'seed{self.seed}'])


def _name_part(value) -> str:
  text = str(value)
  safe = re.sub(r'[^A-Za-z0-9.+-]', '_', text)
  if safe != text:  # Keep names of different values apart.
    safe += '-' + hashlib.sha1(text.encode()).hexdigest()[:6]
  return safe


# ------------------------------------------------------------------ flags --


def parse_iters(text: str) -> list[int]:
  """'1,3' -> [1, 3], duplicates dropped.

  Raises:
    errors.ConfigError: unless every item is an int >= 1.
  """
  items = [item.strip() for item in str(text).split(',')]
  if not all(re.fullmatch(r'\d+', item) and int(item) >= 1 for item in items):
    raise errors.ConfigError(
        f'--routing_iters must be comma-separated ints >= 1, got {text!r}; '
        f'e.g. --routing_iters=1,3.')
  return list(dict.fromkeys(int(item) for item in items))


def parse_recon(text: str) -> list[bool]:
  """'on,off' -> [True, False], duplicates dropped.

  Raises:
    errors.ConfigError: unless every item is 'on' or 'off'.
  """
  items = [item.strip().lower() for item in str(text).split(',')]
  if not all(item in ('on', 'off') for item in items):
    raise errors.ConfigError(
        f'--recon must be on, off or on,off, got {text!r}; e.g. '
        f'--recon=on,off.')
  return list(dict.fromkeys(item == 'on' for item in items))


def check_seeds(num_seeds) -> int:
  if not checks.is_int(num_seeds) or num_seeds < 1:
    raise errors.ConfigError(f'--seeds must be an int >= 1, got {num_seeds!r};'
                            f' e.g. --seeds=3.')
  return num_seeds


def _split_values(text: str) -> list[str]:
  """'a,(1,2),b' -> ['a', '(1,2)', 'b']: commas inside brackets stay."""
  items, depth, current = [], 0, ''
  for char in text:
    depth += char in '([{'
    depth -= char in ')]}'
    if char == ',' and depth == 0:
      items.append(current)
      current = ''
    else:
      current += char
  return [item.strip() for item in items + [current]]


def _field_value(config, field: str):
  node = config
  for part in field.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise errors.ConfigError(
          f'--grid field {field!r} is not in the config; name a field of it, '
          f'e.g. --grid=model.routing=dynamic,self_attention.')
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    raise errors.ConfigError(
        f'--grid field {field!r} is a group of fields; name one of them, e.g. '
        f'{field}.{next(iter(node))}.')
  return node


def parse_value(current, field: str, text: str):
  """`text` parsed with the type of the config's `current` value of `field`.

  Raises:
    errors.ConfigError: naming the field, the type and the value.
  """
  kind = type(current)
  try:
    if kind is bool:
      lowered = text.lower()
      if lowered not in ('true', 'false', '1', '0'):
        raise ValueError(text)
      return lowered in ('true', '1')
    if kind is int:
      return int(text)
    if kind is float:
      return float(text)
    if kind is str:
      return text
    if kind in (tuple, list):
      value = ast.literal_eval(text)
      value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
      return kind(value)
  except (ValueError, SyntaxError):
    pass
  else:
    raise errors.ConfigError(
        f'--grid field {field!r} has type {kind.__name__}, which --grid cannot '
        f'set; sweep another field.')
  raise errors.ConfigError(
      f'--grid value {text!r} of {field} is not a {kind.__name__} (the type '
      f'of its value {current!r} in the config); e.g. --grid={field}='
      f'{current!r},{current!r}.')


def parse_grid(config: ml_collections.ConfigDict,
               specs: Sequence[str]) -> dict[str, list]:
  """['model.routing=dynamic,self_attention', ...] -> {field: [values]}.

  Values are typed like the field's value in `config`; duplicates dropped.

  Raises:
    errors.ConfigError: a malformed item, an unknown or repeated field, the
      seed (use --seeds), or a value of the wrong type.
  """
  grid = {}
  for spec in specs:
    field, sep, text = str(spec).partition('=')
    field = field.strip()
    if not sep or not field or not text.strip():
      raise errors.ConfigError(
          f'--grid must be FIELD=V1,V2,..., got {spec!r}; e.g. '
          f'--grid=model.routing=dynamic,self_attention.')
    if field == 'seed':
      raise errors.ConfigError('--grid=seed=... is what --seeds does; use '
                               '--seeds=N.')
    if field in grid:
      raise errors.ConfigError(f'--grid names {field} twice; list all its '
                               f'values in one --grid={field}=V1,V2.')
    current = _field_value(config, field)
    values = [parse_value(current, field, item)
              for item in _split_values(text)]
    grid[field] = list(dict.fromkeys(values))
  return grid


# ------------------------------------------------------------------- runs --


def plan(config: ml_collections.ConfigDict, iters: Sequence[int],
         recon: Sequence[bool], num_seeds: int) -> list[Run]:
  """Every combination, seed-major: a cut-short sweep has all cells filled."""
  return [Run(r, on, config.seed + s) for s in range(num_seeds)
          for r in iters for on in recon]


def plan_grid(config: ml_collections.ConfigDict, grid: dict[str, list],
              num_seeds: int) -> list[GridRun]:
  """Every combination of the grid's values, seed-major, first field outer."""
  combos = list(itertools.product(*grid.values()))
  return [GridRun(tuple(zip(grid, combo)), config.seed + s)
          for s in range(num_seeds) for combo in combos]


def run_config(config: ml_collections.ConfigDict,
               run) -> ml_collections.ConfigDict:
  """`config` with the run's fields (a `GridRun`), or with a Table 1 `Run`'s
  routing iterations and reconstruction; and its seed."""
  if isinstance(run, GridRun):
    config = config.copy_and_resolve_references()
    for field, value in run.values:
      *groups, name = field.split('.')
      node = config
      for group in groups:
        node = node[group]
      node[name] = value
    config.seed = run.seed
    return config
  weight = config.loss.reconstruction_weight or PAPER_RECONSTRUCTION_WEIGHT
  config = config.copy_and_resolve_references()
  config.model.routing_iters = run.routing_iters
  config.loss.reconstruction_weight = weight if run.reconstruction else 0.0
  config.seed = run.seed
  return config


def finished_summary(workdir: str, num_train_steps: int) -> Optional[dict]:
  """The run's summary if it trained at least `num_train_steps`, else None."""
  summary = workdir_lib.read_json(os.path.join(workdir, 'summary.json'))
  if summary and summary.get('steps', -1) >= num_train_steps:
    return summary
  return None


def _flatten(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def config_changes(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """Fields of `config` that differ from a run's saved config.json.

  num_train_steps is left out: raising it is how a finished run is extended.
  """
  saved = _flatten(saved)
  # Through JSON, as the saved copy went: tuples become lists.
  current = _flatten(json.loads(json.dumps(config.to_dict())))
  return [f'{k}: {saved.get(k)!r} -> {current.get(k)!r}'
          for k in sorted(set(saved) | set(current))
          if k != 'num_train_steps' and saved.get(k) != current.get(k)]


def run_sweep(config: ml_collections.ConfigDict, sweep_dir: str,
              iters: Sequence[int] = (), recon: Sequence[bool] = (),
              num_seeds: int = 1,
              grid: Optional[dict[str, list]] = None) -> list[dict]:
  """Trains the missing runs of the sweep; returns the rows of results.csv.

  The runs are Table 1's `iters` x `recon`, or with `grid` (from
  `parse_grid`) every combination of its values; each x `num_seeds`. Every
  run's config is validated before the first is trained. Finished runs
  (summary.json with at least `num_train_steps` steps) are skipped without
  loading anything; others are trained or resumed by
  `train.train_and_evaluate` in `SWEEP_DIR/RUN_NAME`. The results files are
  rewritten after every trained run and at the end.
  """
  runs = (plan(config, iters, recon, num_seeds) if grid is None
          else plan_grid(config, grid, num_seeds))
  configs = [run_config(config, run) for run in runs]
  for cfg in configs:
    validation.check_config(cfg)
  sweep_dir = _prepare_sweep_dir(sweep_dir)
  for index, (run, cfg) in enumerate(zip(runs, configs), 1):
    workdir = os.path.join(sweep_dir, run.name)
    saved = workdir_lib.read_json(os.path.join(workdir, 'config.json'))
    changes = config_changes(saved, cfg) if saved else []
    if changes:
      logging.warning('%s was trained with a different config (%s); its '
                      'checkpoint and results are kept. Use a new --sweep_dir '
                      'to train from scratch.', run.name, '; '.join(changes))
    summary = finished_summary(workdir, cfg.num_train_steps)
    if summary is not None:
      logging.info('[%d/%d] %s: finished earlier, %.2f%% test error; skipped.',
                   index, len(runs), run.name, summary['test_error_pct'])
      continue
    logging.info('[%d/%d] %s: training.', index, len(runs), run.name)
    _, summary = train.train_and_evaluate(cfg, workdir)
    logging.info('[%d/%d] %s: %.2f%% test error.', index, len(runs), run.name,
                 summary['test_error_pct'])
    write_results(sweep_dir, grid)
  return write_results(sweep_dir, grid)


def _prepare_sweep_dir(sweep_dir: str) -> str:
  sweep_dir = os.path.abspath(os.path.expanduser(sweep_dir))
  try:
    os.makedirs(sweep_dir, exist_ok=True)
  except OSError as e:
    raise errors.ConfigError(f'cannot create sweep_dir {sweep_dir} '
                            f'({e.strerror}); pass a writable --sweep_dir.'
                            ) from None
  return sweep_dir


# ---------------------------------------------------------------- results --


def collect(sweep_dir: str) -> list[dict]:
  """One row per finished Table 1 run in `sweep_dir`, sorted by iters, recon,
  seed; the values are read from each run's config.json."""
  rows = []
  for name in sorted(os.listdir(sweep_dir)):
    match = _RUN_NAME.fullmatch(name)
    summary = workdir_lib.read_json(os.path.join(sweep_dir, name, 'summary.json'))
    if not match or not summary:
      continue
    config = workdir_lib.read_json(os.path.join(sweep_dir, name, 'config.json'))
    if not config:
      continue
    # The name says which runs are Table 1's; their values come from what
    # each run recorded.
    weight = _lookup(config, 'loss.reconstruction_weight')
    row = {'run': name,
           'routing_iters': _lookup(config, 'model.routing_iters'),
           'reconstruction': 'on' if weight else 'off',
           'seed': config.get('seed'), 'reconstruction_weight': weight}
    row.update({k: summary.get(k) for k in CSV_COLUMNS if k not in row})
    rows.append(row)
  rows.sort(key=lambda r: (r['routing_iters'], r['reconstruction'] == 'on',
                           r['seed']))
  return rows


def cells(rows: Sequence[dict]) -> list[dict]:
  """Rows grouped by (routing_iters, reconstruction): errors over seeds.

  Returns:
    In the paper's order (iterations ascending, reconstruction off first):
    dicts with routing_iters, reconstruction, errors (test_error_pct per
    seed), mean, std (sample standard deviation; None for one seed) and steps
    (sorted distinct step counts).
  """
  groups = {}
  for row in rows:
    key = (row['routing_iters'], row['reconstruction'] == 'on')
    groups.setdefault(key, []).append(row)
  result = []
  for (iters, on), members in sorted(groups.items()):
    errors = [m['test_error_pct'] for m in members]
    result.append({
        'routing_iters': iters, 'reconstruction': on, 'errors': errors,
        'mean': statistics.fmean(errors),
        'std': statistics.stdev(errors) if len(errors) > 1 else None,
        'steps': sorted({m['steps'] for m in members})})
  return result


def results_markdown(rows: Sequence[dict]) -> str:
  """Table 1 of the paper for these runs, as a markdown table."""
  datasets = ', '.join(sorted({str(r['dataset']) for r in rows}))
  lines = [f'Test error (%) on {datasets}: mean ± sample standard deviation '
           f'over seeds.', '',
           '| Routing iterations | Reconstruction | Test error (%) | Seeds '
           '| Steps |',
           '| ---: | :---: | ---: | ---: | ---: |']
  for cell in cells(rows):
    error = f'{cell["mean"]:.2f}'
    error += (' ± –' if cell['std'] is None else f' ± {cell["std"]:.2f}')
    lines.append(
        f'| {cell["routing_iters"]} | {"yes" if cell["reconstruction"] else "no"}'
        f' | {error} | {len(cell["errors"])} | '
        f'{", ".join(str(s) for s in cell["steps"])} |')
  lines += ['', '– : one seed, no spread to report.']
  return '\n'.join(lines) + '\n'


def results_csv(rows: Sequence[dict]) -> str:
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  return text.getvalue()


def plot_results(rows: Sequence[dict], path: str) -> None:
  """Test error against routing iterations: seeds as dots, mean +- std."""
  fig, ax = plt.subplots(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI)
  all_cells = cells(rows)
  for on, color in ((False, 'tab:blue'), (True, 'tab:orange')):
    mine = [c for c in all_cells if c['reconstruction'] == on]
    if not mine:
      continue
    x = [c['routing_iters'] for c in mine]
    ax.errorbar(x, [c['mean'] for c in mine],
                yerr=[c['std'] or 0.0 for c in mine], color=color, marker='o',
                capsize=3, label=f'reconstruction {"on" if on else "off"}')
    for c in mine:
      ax.scatter([c['routing_iters']] * len(c['errors']), c['errors'],
                 color=color, s=10, alpha=0.5)
  ax.set_xticks(sorted({c['routing_iters'] for c in all_cells}))
  ax.set_xlabel('routing iterations')
  ax.set_ylabel('test error (%)')
  ax.set_title('CapsNet test error (dots: seeds, bars: ± std)', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  workdir_lib.write_figure(path, fig)


def _lookup(tree: dict, field: str):
  for part in field.split('.'):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return tuple(tree) if isinstance(tree, list) else tree


def collect_grid(sweep_dir: str, grid: dict[str, list]) -> list[dict]:
  """One row per finished run in `sweep_dir`, named by its config.json.

  Each row has 'run' (the directory), the grid's fields with the values the
  run's config.json records (not parsed from the directory name), 'seed' and
  the summary's numbers. Sorted in the grid's order of values, then seed.
  """
  rows = []
  for name in sorted(os.listdir(sweep_dir)):
    summary = workdir_lib.read_json(os.path.join(sweep_dir, name, 'summary.json'))
    config = workdir_lib.read_json(os.path.join(sweep_dir, name, 'config.json'))
    if not summary or not config:
      continue
    row = {'run': name, 'seed': config.get('seed')}
    row.update({field: _lookup(config, field) for field in grid})
    row.update({k: summary.get(k) for k in CSV_COLUMNS if k not in row
                and k not in ('routing_iters', 'reconstruction',
                              'reconstruction_weight')})
    rows.append(row)

  def order(row):
    key = []
    for field, values in grid.items():
      value = row[field]
      key.append((values.index(value), '') if value in values
                 else (len(values), str(value)))
    return key, str(row['seed'])
  return sorted(rows, key=order)


def grid_cells(rows: Sequence[dict], fields: Sequence[str]) -> list[dict]:
  """Rows grouped by the fields' values, in row order: errors over seeds."""
  groups = {}
  for row in rows:
    groups.setdefault(tuple(repr(row[f]) for f in fields), []).append(row)
  result = []
  for members in groups.values():
    errors_ = [m['test_error_pct'] for m in members]
    speeds = [m['train_images_per_s'] for m in members
              if m.get('train_images_per_s')]
    result.append({
        'values': {f: members[0][f] for f in fields}, 'errors': errors_,
        'mean': statistics.fmean(errors_),
        'std': statistics.stdev(errors_) if len(errors_) > 1 else None,
        'steps': sorted({m['steps'] for m in members}),
        'images_per_s': statistics.fmean(speeds) if speeds else None})
  return result


def grid_markdown(rows: Sequence[dict], fields: Sequence[str]) -> str:
  """One row per combination of the fields: test error and speed."""
  datasets = ', '.join(sorted({str(r['dataset']) for r in rows}))
  lines = [f'Test error (%) on {datasets}: mean ± sample standard deviation '
           f'over seeds.', '',
           '| ' + ' | '.join(fields) + ' | Test error (%) | Seeds | Steps | '
           'Train images/s |',
           '| ' + ' | '.join(':---' for _ in fields) +
           ' | ---: | ---: | ---: | ---: |']
  for cell in grid_cells(rows, fields):
    error = f'{cell["mean"]:.2f}'
    error += (' ± –' if cell['std'] is None else f' ± {cell["std"]:.2f}')
    speed = ('–' if cell['images_per_s'] is None
             else f'{cell["images_per_s"]:.0f}')
    values = ' | '.join(str(cell['values'][f]) for f in fields)
    lines.append(f'| {values} | {error} | {len(cell["errors"])} | '
                 f'{", ".join(str(s) for s in cell["steps"])} | {speed} |')
  lines += ['', '– : one seed, no spread to report.']
  return '\n'.join(lines) + '\n'


def grid_csv(rows: Sequence[dict], fields: Sequence[str]) -> str:
  columns = ['run', *fields, 'seed'] + [
      k for k in CSV_COLUMNS if k not in ('run', 'seed', 'routing_iters',
                                          'reconstruction',
                                          'reconstruction_weight')
      and k not in fields]
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=columns, lineterminator='\n',
                          extrasaction='ignore')
  writer.writeheader()
  writer.writerows(rows)
  return text.getvalue()


def plot_grid(rows: Sequence[dict], fields: Sequence[str], path: str) -> None:
  """Test error per combination: bars of mean +- std, seeds as dots."""
  all_cells = grid_cells(rows, fields)
  fig, ax = plt.subplots(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI)
  y = list(range(len(all_cells)))
  ax.barh(y, [c['mean'] for c in all_cells],
          xerr=[c['std'] or 0.0 for c in all_cells], color='tab:blue',
          alpha=0.6, capsize=3)
  for k, c in zip(y, all_cells):
    ax.scatter(c['errors'], [k] * len(c['errors']), color='tab:blue', s=10)
  ax.set_yticks(y)
  ax.set_yticklabels([', '.join(str(v) for v in c['values'].values())
                      for c in all_cells], fontsize=7)
  ax.invert_yaxis()
  ax.set_xlabel('test error (%)')
  ax.set_title(', '.join(fields), fontsize=9)
  ax.grid(alpha=0.3, axis='x')
  fig.tight_layout()
  workdir_lib.write_figure(path, fig)


def write_results(sweep_dir: str,
                  grid: Optional[dict[str, list]] = None) -> list[dict]:
  """Rewrites results.csv, results.md and the plot from every finished run.

  Table 1 without `grid`; with it, one row per combination of its fields.
  """
  if grid is None:
    rows = collect(sweep_dir)
    csv_text = results_csv(rows) if rows else ''
    markdown = results_markdown(rows) if rows else ''
    plot = plot_results
  else:
    fields = list(grid)
    rows = collect_grid(sweep_dir, grid)
    csv_text = grid_csv(rows, fields)
    markdown = grid_markdown(rows, fields) if rows else ''
    plot = functools.partial(plot_grid, fields=fields)
  if rows:
    workdir_lib.write_text(os.path.join(sweep_dir, 'results.csv'), csv_text)
    workdir_lib.write_text(os.path.join(sweep_dir, 'results.md'), markdown)
    plot(rows, path=os.path.join(sweep_dir, PLOT_FILE))
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  cli.setup()
  with cli.user_errors_exit():
    num_seeds = check_seeds(FLAGS.seeds)
    grid = None
    if FLAGS.grid:
      for name in ('routing_iters', 'recon'):
        if FLAGS[name].present:
          raise errors.ConfigError(
              f'--{name} is Table 1\'s; with --grid sweep it as a field, e.g. '
              f'--grid=model.routing_iters=1,3 or '
              f'--grid=loss.reconstruction_weight=0,0.0005.')
      grid = parse_grid(FLAGS.config, FLAGS.grid)
      rows = run_sweep(FLAGS.config, FLAGS.sweep_dir, num_seeds=num_seeds,
                       grid=grid)
    else:
      iters = parse_iters(FLAGS.routing_iters)
      recon = parse_recon(FLAGS.recon)
      rows = run_sweep(FLAGS.config, FLAGS.sweep_dir, iters, recon, num_seeds)
  if rows:
    print(results_markdown(rows) if grid is None
          else grid_markdown(rows, list(grid)))
  logging.info('Results in %s.', os.path.abspath(FLAGS.sweep_dir))



def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the command line's flags.

  Called only when run as a script, so importing this module (as the tests
  do) does not clash with the flags of capsjax.main.
  """
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/quickstart.py.',
      lock_config=True, flag_values=flag_values)
  flags.DEFINE_string(
      'sweep_dir', None, 'Directory holding one workdir per run and the '
      'results; rerunning with the same one resumes.', flag_values=flag_values)
  flags.DEFINE_string('routing_iters', '1,3', 'Comma-separated routing iterations, '
                      'ints >= 1.', flag_values=flag_values)
  flags.DEFINE_string('recon', 'on,off', 'Reconstruction loss settings to '
                      'sweep: on, off or on,off.', flag_values=flag_values)
  flags.DEFINE_integer('seeds', 1, 'Seeds per combination: config.seed .. '
                       'config.seed + N - 1.', flag_values=flag_values)
  flags.DEFINE_multi_string(
      'grid', [], 'FIELD=V1,V2: sweep these values of a config field '
      '(repeatable; every combination) instead of Table 1, e.g. '
      '--grid=model.routing=dynamic,self_attention.', flag_values=flag_values)
  flags.mark_flags_as_required(['config', 'sweep_dir'], flag_values)

if __name__ == '__main__':
  define_flags()
  app.run(main)
