r"""Speed of capsjax's models: images/s, compile time, memory, FLOP/s.

    python experiments/benchmark.py                 # train and eval at batch
                                                    # 32/128/512, routing 1/3/5
    python experiments/benchmark.py --mode=train --batch=128 --routing_iters=3
    python experiments/benchmark.py --json          # one JSON object per line
    python experiments/benchmark.py --mode=train --batch=128 --routing_iters=3 \
        --routing=dynamic,self_attention,inverted_dot_product  # algorithms
    python experiments/benchmark.py --model=efficient_capsnet --batch=16 \
        --routing_iters=1                           # another model
    python experiments/benchmark.py --batch=128 --routing_iters=3 --repeats=5 \
        --compare_torch=/tmp/torch-venv/bin/python  # side by side with the
                                                    # PyTorch reference

Each configuration runs in a fresh subprocess (so compile time and peak
memory are its own) and times the real `train.train_step` / `train.eval_step`
of the model's config (`--model`: capsnet is `configs/mnist.py`,
efficient_capsnet `configs/efficient_capsnet.py`) with `--routing` as
`config.model.routing` (default: the config's), on random 28x28 images:
warm-up steps, then the median of `--steps` timed steps. Model FLOP/s count
the matmul and convolution multiply-adds of the network (CapsNet: by formula,
training = forward + 2x backward, Conv1 without an input gradient; other
models: XLA's cost analysis of the compiled step) and are compared with the
FLOP/s of a dense 2048^3 matmul timed in the same process at the same
precision: the practical peak.

With `--compare_torch`, the PyTorch reference runs right after each of our
runs, `--repeats` times in alternation, and the speed-up is the median of the
pairs' ratios (min and max beside it): on a shared machine the speed drifts
over minutes, and a pair run back to back sees the same drift.
"""
import functools
import json
import os
import resource
import runpy
import subprocess
import sys
import time

from absl import app
from absl import flags

from capsjax import cpu_runtime

FLAGS = flags.FLAGS
flags.DEFINE_enum('mode', None, ['train', 'eval'], 'Only this mode '
                  '(default: both).')
flags.DEFINE_list('batch', ['32', '128', '512'], 'Batch sizes.')
flags.DEFINE_list('routing_iters', ['1', '3', '5'], 'Routing iterations.')
flags.DEFINE_string('model', 'capsnet', 'The model: ' + ', '.join(
    'capsnet efficient_capsnet'.split()) + ' (config.model.name).')
flags.DEFINE_list('routing', [], 'Routing algorithms, names in '
                  'capsjax.routing.ROUTINGS (default: the config\'s).')
flags.DEFINE_enum('compute_dtype', 'float32', ['float32', 'bfloat16'],
                  'PrimaryCaps matmul inputs (config.model.compute_dtype).')
flags.DEFINE_integer('microbatch_size', 0, 'Training: split each batch into '
                     'parts of this size (config.microbatch_size; 0 = off).')
flags.DEFINE_integer('steps', 5, 'Timed steps per configuration.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
flags.DEFINE_integer('repeats', 1, 'Runs of every configuration (each with its '
                     'PyTorch run, if any); rows report the medians.')
flags.DEFINE_bool('json', False, 'One JSON object per line instead of a table.')
flags.DEFINE_string('compare_torch', None, 'A Python with torch installed: '
                    'also run the PyTorch reference for every configuration.')
flags.DEFINE_string('torch_script', os.path.join(
    os.path.dirname(__file__), '..', '..', 'shared', 'bench',
    'torch_capsnet.py'), 'The PyTorch reference script.')
flags.DEFINE_bool('child', False, 'Internal: measure one configuration in '
                  'this process and print it as JSON.')

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                        'configs')
# --model -> the config whose model and loss it times.
MODEL_CONFIGS = {'capsnet': 'mnist.py',
                 'efficient_capsnet': 'efficient_capsnet.py'}


def load_config(model_name: str):
  """The config of `--model`; SystemExit naming the choices if unknown."""
  if model_name not in MODEL_CONFIGS:
    sys.exit(f'error: unknown --model {model_name!r}; use one of '
             f'{", ".join(MODEL_CONFIGS)}.')
  return runpy.run_path(os.path.join(_CONFIGS, MODEL_CONFIGS[model_name]))[
      'get_config']()


def model_flops(model, batch_size: int, train: bool) -> float:
  """Multiply-add FLOPs (2 per MAC) of one step of `model` on a batch."""
  h, w, c = model.input_shape
  h1, w1 = h - model.conv1_kernel + 1, w - model.conv1_kernel + 1
  k2, s2 = model.primary_kernel, model.primary_stride
  h2, w2 = (h1 - k2) // s2 + 1, (w1 - k2) // s2 + 1
  primary_channels = model.primary_types * model.primary_dim
  num_primary = h2 * w2 * model.primary_types
  digits = model.num_classes * model.digit_dim
  widths = (digits, *model.decoder_hidden, h * w * c)
  macs = {  # Per example, forward.
      'conv1': h1 * w1 * model.conv1_kernel**2 * c * model.conv1_channels,
      'primary': h2 * w2 * k2 * k2 * model.conv1_channels * primary_channels,
      'u_hat': num_primary * digits * model.primary_dim,
      # Weighted sums every iteration, agreements all but the last; the
      # self-attention routing has one of each, whatever routing_iters.
      'routing': num_primary * digits * (
          2 if model.routing == 'self_attention'
          else 2 * model.routing_iters - 1),
      'decoder': sum(a * b for a, b in zip(widths[:-1], widths[1:])),
  }
  if train:  # Backward: input and weight gradients; Conv1 has no input grad.
    macs = {k: v * (2 if k == 'conv1' else 3) for k, v in macs.items()}
  return 2.0 * batch_size * sum(macs.values())


def matmul_flops_per_s(compute_dtype: str, n: int = 2048) -> float:
  """FLOP/s of a dense n^3 matmul with float32 accumulation."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (n, n)).astype(compute_dtype)
  matmul = jax.jit(functools.partial(jax.lax.dot,
                                     preferred_element_type=jnp.float32))
  times = _time(lambda: matmul(a, a), warmup=2, steps=5)
  return 2.0 * n**3 / _median(times)


def _median(values):
  values = sorted(values)
  return values[len(values) // 2]


def _time(fn, *, warmup: int, steps: int) -> list[float]:
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def measure(mode: str, batch_size: int, routing_iters: int, *,
            compute_dtype: str = 'float32', microbatch_size: int = 0,
            steps: int = 5, warmup: int = 2, config=None,
            model_name: str = 'capsnet', routing: str | None = None) -> dict:
  """Times one configuration in this process; returns a result row.

  `config` defaults to `--model`'s (`model_name`); `routing` (a name in
  `capsjax.routing.ROUTINGS`) replaces its `model.routing` if given.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from capsjax import models  # pylint: disable=g-import-not-at-top
  from capsjax import train  # pylint: disable=g-import-not-at-top

  if config is None:
    config = load_config(model_name)
  config.model.routing_iters = routing_iters
  if routing is not None:
    config.model.routing = routing
  if 'compute_dtype' in config.model:
    config.model.compute_dtype = compute_dtype
  # Parts of the batch, as train_and_evaluate derives them. A batch that
  # microbatch_size does not divide (32 with 128) runs whole, so that one
  # sweep covers every batch size.
  parts = batch_size // microbatch_size if microbatch_size and not (
      batch_size % microbatch_size) else 1
  shape = (28, 28, 1)
  model = models.create_model(config.model, shape, 10)
  state = train.create_train_state(config, model, jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.random((batch_size, *shape), np.float32)),
           'label': jnp.asarray(rng.integers(0, 10, batch_size, np.int32)),
           'mask': jnp.ones((batch_size,), jnp.float32)}

  objective = models.spec(config.model).objective
  if mode == 'train':
    step = jax.jit(functools.partial(train.train_step, objective=objective,
                                     loss_config=config.loss,
                                     num_microbatches=parts),
                   donate_argnums=0)
    args = (state, batch, jax.random.key(1))
  else:
    step = jax.jit(functools.partial(train.eval_step, objective=objective,
                                     loss_config=config.loss))
    args = (state, batch)
  start = time.perf_counter()
  compiled = step.lower(*args).compile()
  compile_s = time.perf_counter() - start

  if mode == 'train':
    def run():
      nonlocal state
      state, metrics = compiled(state, batch, args[2])
      return metrics
  else:
    run = functools.partial(compiled, state, batch)
  seconds = _median(_time(run, warmup=warmup, steps=steps))

  if config.model.name == 'capsnet':
    flops = model_flops(model, batch_size, train=mode == 'train')
  else:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get('flops', float('nan')))
  peak = matmul_flops_per_s(compute_dtype)
  return {
      'framework': 'capsjax', 'model': config.model.name,
      'algorithm': config.model.routing, 'mode': mode, 'batch': batch_size,
      'routing': routing_iters, 'compute_dtype': compute_dtype,
      'microbatch_size': batch_size // parts if mode == 'train' else 0,
      'device': f'{jax.devices()[0].platform}:{jax.devices()[0].device_kind}',
      'num_devices': jax.device_count(),
      'step_ms': 1e3 * seconds, 'images_per_s': batch_size / seconds,
      'compile_s': compile_s,
      'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      'model_gflop_per_step': flops / 1e9,
      'model_gflop_per_s': flops / seconds / 1e9,
      'matmul_peak_gflop_per_s': peak / 1e9,
      'fraction_of_matmul_peak': flops / seconds / peak,
  }


def _run_child(mode, batch_size, routing_iters, algorithm) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), '--child',
         f'--model={FLAGS.model}', f'--routing={algorithm or ""}',
         f'--mode={mode}', f'--batch={batch_size}',
         f'--routing_iters={routing_iters}', f'--compute_dtype={FLAGS.compute_dtype}',
         f'--microbatch_size={FLAGS.microbatch_size}',
         f'--steps={FLAGS.steps}', f'--warmup={FLAGS.warmup}']
  return _last_json_line(subprocess.run(cmd, capture_output=True, text=True),
                         cmd)


def _run_torch(mode, batch_size, routing_iters) -> dict:
  cmd = [FLAGS.compare_torch, FLAGS.torch_script, '--mode', mode,
         '--batch', str(batch_size), '--routing', str(routing_iters),
         '--steps', str(FLAGS.steps), '--warmup', str(FLAGS.warmup)]
  return _last_json_line(subprocess.run(cmd, capture_output=True, text=True),
                         cmd)


def combine_repeats(ours: list[dict], torch: list[dict] | None) -> dict:
  """One row from repeated runs: the median run, and the median pair ratio.

  `torch[k]` ran right after `ours[k]`; each pair's ratio compares runs that
  saw the same machine state.
  """
  row = dict(sorted(ours, key=lambda r: r['images_per_s'])[len(ours) // 2])
  row['repeats'] = len(ours)
  if torch:
    ratios = [o['images_per_s'] / t['images_per_s']
              for o, t in zip(ours, torch)]
    row['torch_images_per_s'] = _median([t['images_per_s'] for t in torch])
    row['speedup_vs_torch'] = _median(ratios)
    row['speedup_min'], row['speedup_max'] = min(ratios), max(ratios)
  return row


def _last_json_line(proc, cmd) -> dict:
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    sys.exit(f'error: {" ".join(cmd)} failed: {tail}')
  return json.loads(lines[-1])


_COLUMNS = [('model', '{}'), ('algorithm', '{}'), ('mode', '{}'),
            ('batch', '{}'), ('routing', '{}'),
            ('images_per_s', '{:.1f}'), ('step_ms', '{:.0f}'),
            ('compile_s', '{:.1f}'), ('peak_rss_mib', '{:.0f}'),
            ('model_gflop_per_s', '{:.0f}'),
            ('fraction_of_matmul_peak', '{:.2f}'),
            ('torch_images_per_s', '{:.1f}'), ('speedup_vs_torch', '{:.2f}x'),
            ('speedup_min', '{:.2f}x'), ('speedup_max', '{:.2f}x')]


def _print_table(rows):
  columns = [(k, f) for k, f in _COLUMNS if any(k in r for r in rows)]
  cells = [[f.format(r[k]) if k in r else '' for k, f in columns]
           for r in rows]
  widths = [max(len(k), *(len(c[i]) for c in cells))
            for i, (k, _) in enumerate(columns)]
  print('  '.join(k.rjust(w) for (k, _), w in zip(columns, widths)))
  for c in cells:
    print('  '.join(v.rjust(w) for v, w in zip(c, widths)))
  first = rows[0]
  print(f'device {first["device"]} x{first["num_devices"]}, compute_dtype '
        f'{first["compute_dtype"]}, dense matmul peak '
        f'{first["matmul_peak_gflop_per_s"]:.0f} GFLOP/s')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    batches = [int(b) for b in FLAGS.batch]
    routings = [int(r) for r in FLAGS.routing_iters]
  except ValueError:
    sys.exit('error: --batch and --routing_iters take comma-separated '
             'integers, e.g. --batch=32,128 --routing_iters=3.')
  if min(batches) < 1 or min(routings) < 1 or FLAGS.repeats < 1:
    sys.exit('error: batch sizes, routing iterations and --repeats must be '
             '>= 1.')
  algorithms = [a for a in FLAGS.routing if a] or [None]
  load_config(FLAGS.model)  # Exits on an unknown --model.
  cpu_runtime.configure()  # As the training CLI does; before JAX runs.
  # After configure(): importing capsjax starts JAX.
  from capsjax import routing as routing_lib  # pylint: disable=g-import-not-at-top
  unknown = [a for a in algorithms if a and a not in routing_lib.ROUTINGS]
  if unknown:
    sys.exit(f'error: unknown --routing {unknown[0]!r}; use names in '
             f'{", ".join(routing_lib.ROUTINGS)} (iterations are '
             f'--routing_iters).')
  modes = [FLAGS.mode] if FLAGS.mode else ['train', 'eval']
  if FLAGS.child:
    print(json.dumps(measure(modes[0], batches[0], routings[0],
                             compute_dtype=FLAGS.compute_dtype,
                             microbatch_size=FLAGS.microbatch_size,
                             steps=FLAGS.steps, warmup=FLAGS.warmup,
                             model_name=FLAGS.model,
                             routing=algorithms[0])))
    return
  if FLAGS.compare_torch and not os.path.exists(FLAGS.torch_script):
    sys.exit(f'error: no PyTorch reference at {FLAGS.torch_script}; pass '
             f'--torch_script=PATH.')
  if FLAGS.compare_torch and (FLAGS.model != 'capsnet' or any(
      a not in (None, 'dynamic') for a in algorithms)):
    sys.exit('error: the PyTorch reference is the CapsNet with dynamic '
             'routing; drop --compare_torch or use --model=capsnet '
             '--routing=dynamic.')
  rows = []
  for mode in modes:
    for batch_size in batches:
      for routing_iters in routings:
        for algorithm in algorithms:
          ours, torch = [], []
          for _ in range(FLAGS.repeats):
            ours.append(_run_child(mode, batch_size, routing_iters, algorithm))
            if FLAGS.compare_torch:
              torch.append(_run_torch(mode, batch_size, routing_iters))
          row = combine_repeats(ours, torch)
          if FLAGS.json:
            print(json.dumps(row), flush=True)
          rows.append(row)
  if not FLAGS.json:
    _print_table(rows)


if __name__ == '__main__':
  app.run(main)
