r"""The paper's Table 1: test error by routing iterations x reconstruction.

    python experiments/routing_sweep.py --config=configs/quickstart.py \
        --sweep_dir=/tmp/capsnet_sweep --routing_iters=1,3 --recon=on,off --seeds=2

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
finished runs in SWEEP_DIR:

  SWEEP_DIR/results.csv     one row per run
  SWEEP_DIR/results.md      Table 1: test error % as mean +- std over seeds
  SWEEP_DIR/test_error.png  test error against routing iterations
"""
import csv
import dataclasses
import io
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

from capsjax import cli
from capsjax import errors
from capsjax import train
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
  if (isinstance(num_seeds, bool) or not isinstance(num_seeds, int)
      or num_seeds < 1):
    raise errors.ConfigError(f'--seeds must be an int >= 1, got {num_seeds!r};'
                            f' e.g. --seeds=3.')
  return num_seeds


# ------------------------------------------------------------------- runs --


def plan(config: ml_collections.ConfigDict, iters: Sequence[int],
         recon: Sequence[bool], num_seeds: int) -> list[Run]:
  """Every combination, seed-major: a cut-short sweep has all cells filled."""
  return [Run(r, on, config.seed + s) for s in range(num_seeds)
          for r in iters for on in recon]


def run_config(config: ml_collections.ConfigDict,
               run: Run) -> ml_collections.ConfigDict:
  """`config` with the run's routing iterations, reconstruction and seed."""
  weight = config.loss.reconstruction_weight or PAPER_RECONSTRUCTION_WEIGHT
  config = config.copy_and_resolve_references()
  config.model.routing_iters = run.routing_iters
  config.loss.reconstruction_weight = weight if run.reconstruction else 0.0
  config.seed = run.seed
  return config


def _read_json(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def finished_summary(workdir: str, num_train_steps: int) -> Optional[dict]:
  """The run's summary if it trained at least `num_train_steps`, else None."""
  summary = _read_json(os.path.join(workdir, 'summary.json'))
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
              iters: Sequence[int], recon: Sequence[bool],
              num_seeds: int) -> list[dict]:
  """Trains the missing runs of the sweep; returns the rows of results.csv.

  Finished runs (summary.json with at least `num_train_steps` steps) are
  skipped without loading anything; others are trained or resumed by
  `train.train_and_evaluate` in `SWEEP_DIR/RUN_NAME`. The results files are
  rewritten after every trained run and at the end.
  """
  sweep_dir = _prepare_sweep_dir(sweep_dir)
  runs = plan(config, iters, recon, num_seeds)
  for index, run in enumerate(runs, 1):
    workdir = os.path.join(sweep_dir, run.name)
    cfg = run_config(config, run)
    saved = _read_json(os.path.join(workdir, 'config.json'))
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
    write_results(sweep_dir)
  return write_results(sweep_dir)


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
  """One row per finished run in `sweep_dir`, sorted by iters, recon, seed."""
  rows = []
  for name in sorted(os.listdir(sweep_dir)):
    match = _RUN_NAME.fullmatch(name)
    summary = _read_json(os.path.join(sweep_dir, name, 'summary.json'))
    if not match or not summary:
      continue
    config = _read_json(os.path.join(sweep_dir, name, 'config.json')) or {}
    row = {'run': name, 'routing_iters': int(match.group(1)),
           'reconstruction': match.group(2), 'seed': int(match.group(3)),
           'reconstruction_weight': config.get('loss', {}).get(
               'reconstruction_weight')}
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
  _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
  workdir_lib.write_atomic(path, fig.savefig)
  plt.close(fig)


def write_results(sweep_dir: str) -> list[dict]:
  """Rewrites results.csv, results.md and the plot from every finished run."""
  rows = collect(sweep_dir)
  if rows:
    workdir_lib.write_text(os.path.join(sweep_dir, 'results.csv'), results_csv(rows))
    workdir_lib.write_text(os.path.join(sweep_dir, 'results.md'), results_markdown(rows))
    plot_results(rows, os.path.join(sweep_dir, PLOT_FILE))
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  cli.setup()
  with cli.user_errors_exit():
    iters = parse_iters(FLAGS.routing_iters)
    recon = parse_recon(FLAGS.recon)
    num_seeds = check_seeds(FLAGS.seeds)
    rows = run_sweep(FLAGS.config, FLAGS.sweep_dir, iters, recon, num_seeds)
  if rows:
    print(results_markdown(rows))
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
  flags.mark_flags_as_required(['config', 'sweep_dir'], flag_values)

if __name__ == '__main__':
  define_flags()
  app.run(main)
