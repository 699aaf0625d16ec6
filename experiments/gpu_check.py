r"""One command for a lent GPU: the device, a recorded 10-epoch run, speed
beside PyTorch, and the tests.

    CAPSJAX_COMMIT=$(git rev-parse HEAD) python experiments/gpu_check.py \
        --out=DIR --fashion_dir=/usr/share/datasets/fashion-mnist
    python experiments/gpu_check.py --out=/tmp/gpu_smoke --smoke  # on a CPU

Each stage is a subprocess with a time limit, in this order (the goals of the
GPU issue first):

  device     JAX's backend and devices, nvidia-smi, torch's CUDA device.
  fashion    `record.py run gpu_fashion_capsnet_10ep`: the paper's CapsNet,
             10 epochs of Fashion-MNIST, recorded in DIR/results/.
  bench128   benchmark.py at batch 128, train and eval, 3 routing
             iterations, float32 and bfloat16, beside torch eager float32,
             bfloat16 autocast and torch.compile (bfloat16).
  tests      the fast lane of the test suite (`-m "not slow"`).
  bench512   as bench128 at batch 512, beside torch's eager forms.

A stage that fails or runs out of time is reported and the next one runs;
a stage is skipped when less than `MIN_STAGE_S` of `--budget_s` is left.
Every stage's output goes to DIR/<stage>.log as it runs, the benchmark rows
to DIR/<stage>.jsonl, and DIR/gpu_check.json gathers the stages (command,
exit status, wall time), the environment and the goals: a Fashion-MNIST
epoch (60,000 images) in at most 3 s, 10 epochs at >= 91% in under 2
minutes, and at batch 128 at least 2x torch eager float32 and at least
torch at its best. `--smoke` shrinks every stage to seconds on a CPU (a
2-step run, batch 2, one test file): it checks the script, not the GPU.

The device's copy of the tree has no .git: CAPSJAX_COMMIT names the commit
in the records. Training there uses capsjax's defaults for the backend
(`conv.resolve_conv_impl`, `conv.resolve_compute_dtype`; no CPU tuning).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN_NAME = 'gpu_fashion_capsnet_10ep'
# The device tool allows 10 minutes a command; leave room to copy results.
DEFAULT_BUDGET_S = 540
MIN_STAGE_S = 20
FASHION_TRAIN_IMAGES = 60_000

DEVICE_REPORT = r'''
import json, subprocess
import jax
report = {'backend': jax.default_backend(), 'jax': jax.__version__,
          'devices': [str(d) for d in jax.devices()],
          'device_kind': jax.devices()[0].device_kind}
try:
  report['nvidia_smi'] = subprocess.run(
      ['nvidia-smi', '--query-gpu=name,memory.total,driver_version',
       '--format=csv,noheader'], capture_output=True, text=True,
      timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError) as e:
  report['nvidia_smi'] = f'unavailable: {e}'
try:
  import torch
  report['torch'] = torch.__version__
  report['torch_cuda'] = (torch.cuda.get_device_name(0)
                          if torch.cuda.is_available() else None)
except ImportError:
  report['torch'] = None
print(json.dumps(report))
'''

# --smoke: the same stages in seconds on a CPU.
_SMOKE_RUN = ('--config.num_train_steps=2', '--config.eval_every_steps=2',
              '--config.checkpoint_every_steps=2', '--config.batch_size=8',
              '--config.model.conv1_channels=8',
              '--config.model.primary_types=2',
              '--config.model.decoder_hidden=(8,8)')


def stages(out: str, fashion_dir: str, smoke: bool = False) -> list[dict]:
  """The stages in run order: name, command, time limit (s), environment."""
  python = sys.executable
  bench = [python, 'experiments/benchmark.py', '--routing_iters=3',
           '--compute_dtype=float32,bfloat16', '--json']
  if smoke:
    bench += ['--steps=1', '--warmup=1']
  run = [python, 'experiments/record.py', 'run', PLAN_NAME,
         f'--workdir={os.path.join(out, "workdirs", PLAN_NAME)}',
         f'--results_dir={os.path.join(out, "results")}', '--',
         f'--config.dataset.directory={fashion_dir}',
         *(_SMOKE_RUN if smoke else ())]
  tests = [python, '-m', 'pytest', '-q', '-p', 'no:randomly',
           *(['tests/test_ops.py', '-n', '0'] if smoke else
             ['-m', 'not slow', '-n', '8'])]
  return [
      {'name': 'device', 'cmd': [python, '-c', DEVICE_REPORT], 'limit_s': 60},
      {'name': 'fashion', 'cmd': run, 'limit_s': 240},
      {'name': 'bench128', 'limit_s': 200, 'cmd': bench + [
          '--batch=2' if smoke else '--batch=128',
          '--torch_forms=' + ('float32' if smoke else
                              'float32,bfloat16,compiled_bfloat16')]},
      # xdist's workers share the GPU: none may take most of its memory.
      {'name': 'tests', 'cmd': tests, 'limit_s': 150,
       'env': {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}},
      {'name': 'bench512', 'limit_s': 150, 'cmd': bench + [
          '--batch=2' if smoke else '--batch=512',
          '--torch_forms=' + ('float32' if smoke else 'float32,bfloat16')]},
  ]


def run_stage(stage: dict, out: str, limit_s: float) -> dict:
  """Runs one stage with its output in OUT/<name>.log; its result."""
  log_path = os.path.join(out, f'{stage["name"]}.log')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [ROOT, os.environ.get('PYTHONPATH')])),
             **stage.get('env', {}))
  start = time.perf_counter()
  with open(log_path, 'w') as log:
    process = subprocess.Popen(stage['cmd'], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, text=True)
    try:
      returncode, timed_out = process.wait(timeout=limit_s), False
    except subprocess.TimeoutExpired:
      process.kill()
      returncode, timed_out = process.wait(), True
  with open(log_path) as log:
    tail = log.read().strip().splitlines()[-3:]
  return {'name': stage['name'], 'cmd': ' '.join(stage['cmd']),
          'returncode': returncode, 'timed_out': timed_out,
          'limit_s': limit_s, 'wall_s': time.perf_counter() - start,
          'tail': tail}


def json_lines(path: str) -> list[dict]:
  """The JSON objects of the lines of `path` that hold one."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      if line.startswith('{'):
        rows.append(json.loads(line))
  return rows


def goals(record: dict | None, bench_rows: list[dict]) -> list[dict]:
  """The GPU issue's goals, each with its measured value (None: not run)."""
  summary = (record or {}).get('summary') or {}
  rate = summary.get('train_images_per_s')
  result = [
      {'goal': 'Fashion-MNIST epoch (60,000 training images), s', 'target':
       '<= 3', 'value': FASHION_TRAIN_IMAGES / rate if rate else None,
       'met': bool(rate) and FASHION_TRAIN_IMAGES / rate <= 3},
      {'goal': '10 epochs: test accuracy', 'target': '>= 0.91',
       'value': summary.get('test_accuracy'),
       'met': summary.get('test_accuracy', 0) >= 0.91},
      {'goal': '10 epochs: wall time with compilation, s', 'target': '< 120',
       'value': summary.get('wall_s'),
       'met': summary.get('wall_s', float('inf')) < 120},
  ]
  for row in bench_rows:
    if row.get('batch') != 128 or 'speedup_vs_torch_float32' not in row:
      continue
    what = f'{row["mode"]}, {row["compute_dtype"]}, batch 128'
    result += [
        {'goal': f'{what}: x torch eager float32', 'target': '>= 2',
         'value': row['speedup_vs_torch_float32'],
         'met': row['speedup_vs_torch_float32'] >= 2},
        {'goal': f'{what}: x torch at its best', 'target': '>= 1',
         'value': row['speedup_vs_torch_best'],
         'met': row['speedup_vs_torch_best'] >= 1},
    ]
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='where results go')
  parser.add_argument('--fashion_dir', default='/usr/share/datasets/'
                      'fashion-mnist', help="Fashion-MNIST's IDX files")
  parser.add_argument('--budget_s', type=float, default=DEFAULT_BUDGET_S,
                      help='seconds for all stages')
  parser.add_argument('--only', default='', help='comma-separated stages')
  parser.add_argument('--smoke', action='store_true',
                      help='tiny stages, to check the script on a CPU')
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  plan = stages(out, os.path.abspath(args.fashion_dir), args.smoke)
  only = [s for s in args.only.split(',') if s]
  unknown = set(only) - {s['name'] for s in plan}
  if unknown:
    parser.error(f'--only has {", ".join(sorted(unknown))}; choose from '
                 f'{", ".join(s["name"] for s in plan)}')
  start = time.perf_counter()
  results = []
  for stage in plan:
    if only and stage['name'] not in only:
      continue
    left = args.budget_s - (time.perf_counter() - start)
    if left < MIN_STAGE_S:
      results.append({'name': stage['name'], 'skipped': f'{left:.0f} s left'})
      continue
    result = run_stage(stage, out, min(stage['limit_s'], left))
    if stage['name'].startswith('bench'):
      rows = json_lines(os.path.join(out, f'{stage["name"]}.log'))
      with open(os.path.join(out, f'{stage["name"]}.jsonl'), 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)
    results.append(result)
    print(f'{stage["name"]}: exit {result["returncode"]}'
          f'{" (out of time)" if result["timed_out"] else ""} after '
          f'{result["wall_s"]:.0f} s; {" / ".join(result["tail"])[-300:]}',
          flush=True)
  record_path = os.path.join(out, 'results', f'{PLAN_NAME}.json')
  record = None
  if os.path.exists(record_path):
    with open(record_path) as f:
      record = json.load(f)
  device = json_lines(os.path.join(out, 'device.log'))
  summary = {
      'command': ' '.join(['python experiments/gpu_check.py',
                           *(argv if argv is not None else sys.argv[1:])]),
      'commit': os.environ.get('CAPSJAX_COMMIT'),
      'device': device[-1] if device else None,
      'wall_s': time.perf_counter() - start,
      'stages': results,
      'goals': goals(record, json_lines(os.path.join(out, 'bench128.jsonl'))),
  }
  with open(os.path.join(out, 'gpu_check.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  for goal in summary['goals']:
    value = goal['value']
    print(f'goal {goal["goal"]} {goal["target"]}: '
          f'{"not measured" if value is None else f"{value:.3g}"}'
          f'{" (met)" if goal["met"] else ""}')
  return 0 if all(r.get('returncode') == 0 for r in results) else 1


if __name__ == '__main__':
  sys.exit(main())
