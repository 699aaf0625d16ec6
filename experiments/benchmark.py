r"""Speed and memory of capsule network steps, beside a PyTorch reference.

    python experiments/benchmark.py                 # train and eval at batch
                                                    # 32/128/512, routing 1/3/5
    python experiments/benchmark.py --mode=train --batch=128 --routing_iters=3
    python experiments/benchmark.py --batch=128 --routing_iters=3 --repeats=5
    python experiments/benchmark.py --size=cifar100 --mode=train \
        --batch=128 --routing_memory=full,chunked --memory_only
    python experiments/benchmark.py --mode=train --batch=32 --routing_iters=3 \
        --routing=dynamic,self_attention,inverted_dot_product  # algorithms
    python experiments/benchmark.py --model=capsnet,efficient_capsnet \
        --mode=train --batch=16 --routing_iters=1      # models
    python experiments/benchmark.py --json          # one JSON object per line
    python experiments/benchmark.py --mode=train --batch=128 --routing_iters=3 \
        --profile --notorch                         # where the step's time goes

Each combination of model, routing, size, mode, batch, iterations and
routing memory runs in a fresh subprocess (so compile time and peak RSS are
its own) and times the real `train.train_step` / `train.eval_step` on random
images: warm-up steps, then the median of `--steps` timed steps.

`--model` names entries of `capsjax.models.MODELS` (config.model.name), each
timed with the shipped config its entry names (capsnet: `configs/mnist.py`,
efficient_capsnet: `configs/efficient_capsnet.py`); `--routing` names routing
algorithms of `capsjax.routing.ROUTINGS` (config.model.routing; default: the
config's); `--routing_iters` is their iterations.

The sizes: 'mnist' is 28x28x1 with 10 classes (the paper's network);
'cifar10' and 'cifar100' are 32x32x3 images with 10 or 100 classes (CapsNet:
2048 primary capsules; u_hat is 1.7 GB at batch 128 with 100 classes).
`--compute_dtype` (one or more) applies to the models with a
`compute_dtype` field (CapsNet, the baseline CNN), `--routing_memory` and
`--routing_chunk` to CapsNet; other models' rows show '-' there.

Memory: `compiled_peak_mib` is what XLA's compiled step says it needs
(`memory_analysis()`: scratch + arguments + outputs not aliased to an
argument), deterministic and unaffected by other processes; `peak_rss_mib` is
the process's measured peak (includes the Python runtime and compilation).

PyTorch: `experiments/torch_reference.py` (the paper's CapsNet with dynamic
routing, in plain PyTorch) runs for `--model=capsnet --routing=dynamic` only,
by default whenever torch is importable by this Python, or by the one
`--torch_python` names; `--notorch` turns it off. It runs on the GPU where its
torch sees one. `--torch_forms` are the forms a PyTorch user would try:
float32, bfloat16 (autocast), and either under `torch.compile`
(compiled_float32, compiled_bfloat16). Every repeat runs ours, then each
torch form, back to back: on a shared machine the speed drifts over minutes,
and runs back to back see the same drift. Torch's runs of a repeat are shared
by the rows that differ only in what torch does not have (compute_dtype,
routing_memory), so each row is paired with the torch runs of the first of
them. `speedup_vs_torch_float32` is the median of the pairs' ratios;
`speedup_vs_torch_best` the median of ours / the fastest torch form of the
same repeat (torch at its best: what a PyTorch user would pick on this
machine).

`--profile` also traces three steps with `jax.profiler` and prints, per
step, the milliseconds of XLA's ops by the model part whose JAX code made
them (the top-level module in the ops' `op_name` metadata, backward marked
"(grad)"; ops outside the model, such as the optimizer, as "rest") and the
longest single ops.

Model FLOP/s count the matmul and convolution multiply-adds (CapsNet: by
formula, training = forward + 2x backward, Conv1 without an input gradient;
other models: XLA's cost analysis of the compiled step) and are compared
with a dense 2048^3 matmul timed in the same process at the same precision.
"""
import collections
import functools
import glob
import gzip
import importlib.util
import json
import os
import re
import resource
import runpy
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from capsjax import cpu_runtime

FLAGS = flags.FLAGS
# --size -> (image shape, classes).
SIZES = {
    'mnist': ((28, 28, 1), 10),
    'cifar10': ((32, 32, 3), 10),
    'cifar100': ((32, 32, 3), 100),
}
# torch_reference.py's forms (its JSON rows' `form`): --dtype, --compile.
TORCH_FORMS = ('float32', 'bfloat16', 'compiled_float32', 'compiled_bfloat16')

flags.DEFINE_enum('mode', None, ['train', 'eval'], 'Only this mode '
                  '(default: both).')
flags.DEFINE_list('model', ['capsnet'], 'Models (config.model.name): '
                  'names in capsjax.models.MODELS.')
flags.DEFINE_list('routing', [], 'Routing algorithms, names in '
                  "capsjax.routing.ROUTINGS (default: the model config's).")
flags.DEFINE_list('size', ['mnist'], f'Input sizes: {", ".join(SIZES)}.')
flags.DEFINE_list('batch', ['32', '128', '512'], 'Batch sizes.')
flags.DEFINE_list('routing_iters', ['1', '3', '5'], 'Routing iterations.')
flags.DEFINE_list('compute_dtype', ['float32'], 'Matmul inputs to run '
                  '(config.model.compute_dtype: float32, bfloat16, auto); '
                  'float32, the reference, unless set (training defaults '
                  'to auto).')
flags.DEFINE_list('routing_memory', ['full'], 'config.model.routing_memory '
                  'values to run, e.g. full,chunked.')
flags.DEFINE_integer('routing_chunk', 8, 'config.model.routing_chunk.')
flags.DEFINE_integer('microbatch_size', 0, 'Training: split each batch into '
                     'parts of this size (config.microbatch_size; 0 = off).')
flags.DEFINE_integer('steps', 5, 'Timed steps per configuration.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
flags.DEFINE_integer('repeats', 1, 'Runs of every configuration (each with its '
                     'PyTorch runs); rows report the medians.')
flags.DEFINE_bool('memory_only', False, 'Compile only and report the compiled '
                  'memory and compile time; no timing, no PyTorch.')
flags.DEFINE_bool('json', False, 'One JSON object per line instead of a table.')
flags.DEFINE_bool('torch', True, 'Also run the PyTorch reference when a '
                  'Python with torch is available (--notorch: never).')
flags.DEFINE_string('torch_python', None, 'A Python with torch installed '
                    '(default: this one, if it imports torch).')
flags.DEFINE_alias('compare_torch', 'torch_python')
flags.DEFINE_list('torch_forms', ['float32', 'bfloat16'], 'PyTorch runs '
                  'per repeat: ' + ', '.join(TORCH_FORMS) + ' (bfloat16: '
                  'autocast; compiled_: torch.compile, minutes on a CPU).')
flags.DEFINE_string('torch_script', os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'torch_reference.py'),
                    'The PyTorch reference script.')
flags.DEFINE_bool('profile', False, 'Also trace three steps with '
                  'jax.profiler and print where their time goes, by model '
                  'part and by XLA op.')
flags.DEFINE_bool('child', False, 'Internal: measure one configuration in '
                  'this process and print it as JSON.')

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
# CapsNet's routing fields the flags set, for the models that declare them.
_CAPSNET_FIELDS = ('routing_memory', 'routing_chunk')


def load_config(model_name: str):
  """The shipped config of `--model` `model_name` (its `models.MODELS` entry
  names it), whose model and loss the benchmark times."""
  # After cpu_runtime.configure(), as every capsjax import here.
  from capsjax import models  # pylint: disable=g-import-not-at-top
  return runpy.run_path(os.path.join(
      _ROOT, models.MODELS[model_name].config))['get_config']()


def cpu_facts() -> dict:
  """The CPU model and the flags that decide bfloat16, for the header."""
  model = ''
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          model = value.strip()
          break
  except OSError:
    pass
  cpu_flags = cpu_runtime.cpu_flags()
  return {'cpu_model': model or 'unknown',
          'cpu_bf16_flags': [f for f in cpu_runtime.BF16_MATMUL_FLAGS
                             if f in cpu_flags],
          'cpu_count': os.cpu_count()}


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


def matmul_flops_per_s(dtype, n: int = 2048) -> float:
  """FLOP/s of a dense n^3 matmul with float32 accumulation."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (n, n)).astype(dtype)
  matmul = jax.jit(functools.partial(jax.lax.dot,
                                     preferred_element_type=jnp.float32))
  times = _time(lambda: matmul(a, a), warmup=2, steps=5)
  return 2.0 * n**3 / _median(times)


def compiled_memory(compiled) -> dict:
  """MiB that XLA's compiled executable needs: scratch, arguments, peak.

  The peak counts the outputs that do not reuse a donated argument's buffer.
  None of it depends on other processes, unlike the RSS.
  """
  analysis = compiled.memory_analysis()
  if analysis is None:  # Not every backend reports it.
    return {}
  mib = 2.0**-20
  temp = analysis.temp_size_in_bytes
  arguments = analysis.argument_size_in_bytes
  outputs = analysis.output_size_in_bytes - analysis.alias_size_in_bytes
  return {'compiled_temp_mib': temp * mib,
          'compiled_argument_mib': arguments * mib,
          'compiled_peak_mib': (temp + arguments + outputs) * mib}


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
            model_name: str = 'capsnet', routing: str | None = None,
            size: str = 'mnist', compute_dtype: str = 'float32',
            routing_memory: str = 'full', routing_chunk: int = 8,
            microbatch_size: int = 0, steps: int = 5, warmup: int = 2,
            memory_only: bool = False, profile: bool = False,
            config=None) -> dict:
  """Compiles and times one configuration in this process; a result row.

  `config` defaults to `model_name`'s (`load_config`); `routing` (a name in
  `capsjax.routing.ROUTINGS`) replaces its `model.routing` if given; `size`
  is a key of SIZES. compute_dtype, routing_memory and routing_chunk apply
  only to models that declare them.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from capsjax import conv  # pylint: disable=g-import-not-at-top
  from capsjax import models  # pylint: disable=g-import-not-at-top
  from capsjax import train  # pylint: disable=g-import-not-at-top

  if config is None:
    config = load_config(model_name)
  config.model.routing_iters = routing_iters
  if routing is not None:
    config.model.routing = routing
  declared = models.spec(config.model).fields
  has_dtype = 'compute_dtype' in declared
  capsnet_fields = all(f in declared for f in _CAPSNET_FIELDS)
  if has_dtype:
    config.model.compute_dtype = compute_dtype
  if capsnet_fields:
    config.model.routing_memory = routing_memory
    config.model.routing_chunk = routing_chunk
  # Parts of the batch, as train_and_evaluate derives them. A batch that
  # microbatch_size does not divide (32 with 128) runs whole, so that one
  # sweep covers every batch size.
  parts = batch_size // microbatch_size if microbatch_size and not (
      batch_size % microbatch_size) else 1
  shape, num_classes = SIZES[size]
  model = models.create_model(config.model, shape, num_classes)
  objective = models.spec(config.model).objective
  state = train.create_train_state(config, model, jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.random((batch_size, *shape), np.float32)),
           'label': jnp.asarray(rng.integers(0, num_classes, batch_size,
                                             np.int32)),
           'mask': jnp.ones((batch_size,), jnp.float32)}

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
  matmul_dtype = (conv.resolve_compute_dtype(compute_dtype) if has_dtype
                  else None) or jnp.float32
  row = {
      'framework': 'capsjax', 'model': config.model.name,
      'routing': config.model.routing if 'routing' in declared else '-',
      'size': size, 'mode': mode,
      'batch': batch_size, 'routing_iters': routing_iters,
      'compute_dtype': compute_dtype if has_dtype else '-',
      'matmul_dtype': jnp.dtype(matmul_dtype).name,
      'routing_memory': routing_memory if capsnet_fields else '-',
      'microbatch_size': batch_size // parts if mode == 'train' else 0,
      'device': f'{jax.devices()[0].platform}:{jax.devices()[0].device_kind}',
      'num_devices': jax.device_count(),
      'compile_s': compile_s, **compiled_memory(compiled),
  }
  if capsnet_fields and routing_memory == 'chunked':
    row['routing_chunk'] = routing_chunk
  if memory_only:
    row['peak_rss_mib'] = _peak_rss_mib()
    return row

  if mode == 'train':
    def run():
      nonlocal state
      state, metrics = compiled(state, batch, args[2])
      return metrics
  else:
    run = functools.partial(compiled, *args)
  seconds = _median(_time(run, warmup=warmup, steps=steps))
  if config.model.name == 'capsnet':
    flops = model_flops(model, batch_size, train=mode == 'train')
  else:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get('flops', float('nan')))
  peak = matmul_flops_per_s(matmul_dtype)
  row.update({
      'step_ms': 1e3 * seconds, 'images_per_s': batch_size / seconds,
      'peak_rss_mib': _peak_rss_mib(),
      'model_gflop_per_step': flops / 1e9,
      'model_gflop_per_s': flops / seconds / 1e9,
      'matmul_peak_gflop_per_s': peak / 1e9,
      'fraction_of_matmul_peak': flops / seconds / peak,
  })
  if profile:
    row['profile'] = profile_steps(compiled, run)
  return row


PROFILED_STEPS = 3


def op_parts(hlo_text: str) -> dict[str, str]:
  """XLA instruction name -> the model part whose JAX code made it.

  The part is the top-level module in the instruction's `op_name` metadata
  (`jit(train_step)/jvp(CapsNet)/primary_caps/...` -> 'primary_caps'; the
  model's own ops, outside any submodule, -> 'CapsNet'), with ' (grad)' for
  the backward pass (`transpose(...)`); ops outside the model (optimizer,
  loss) are 'rest'. A fusion without metadata of its own takes that of its
  fused computation's root.
  """
  op_names, calls, roots = {}, {}, {}
  computation = None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace():  # A computation's header, or '}'.
      header = re.match(r'(?:ENTRY )?%?([\w.-]+) ', line)
      computation = header.group(1) if header else None
      continue
    match = re.match(r'\s*(ROOT )?%?([\w.-]+) = ', line)
    if not match:
      continue
    op_name = re.search(r'op_name="([^"]+)"', line)
    if op_name:
      op_names[match.group(2)] = op_name.group(1)
      if match.group(1) or computation not in roots:
        roots[computation] = op_name.group(1)
    elif called := re.search(r'calls=%?([\w.-]+)', line):
      calls[match.group(2)] = called.group(1)
  for name, called in calls.items():
    if called in roots:
      op_names[name] = roots[called]
  return {name: _model_part(op_name) for name, op_name in op_names.items()}


def _model_part(op_name: str) -> str:
  path = op_name.split('/')
  model = next((k for k, segment in enumerate(path)
                if re.search(r'(^|\()[A-Z]\w*\)*$', segment)), None)
  if model is None:
    return 'rest'
  grad = ' (grad)' if 'transpose(' in path[model] else ''
  # A submodule is a plain name with more of the path below it.
  if model + 2 < len(path) and re.fullmatch(r'[a-z_][a-z_0-9]*',
                                            path[model + 1]):
    return path[model + 1] + grad
  return path[model].split('(')[-1].rstrip(')') + grad


def profile_steps(compiled, run, steps: int = PROFILED_STEPS) -> dict:
  """Per-step ms of XLA:CPU's ops by model part (`op_parts`), and the top ops.

  From a `jax.profiler` trace of `steps` calls of `run`. The op times need
  not add up to the step time: independent ops may overlap on XLA's thread
  pool, and the gaps between ops are no op's.
  """
  import jax  # pylint: disable=g-import-not-at-top
  parts = op_parts(compiled.as_text())
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      for _ in range(steps):
        jax.block_until_ready(run())
    trace, = glob.glob(os.path.join(directory, '**', '*.trace.json.gz'),
                       recursive=True)
    with gzip.open(trace) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  by_part, by_op = collections.Counter(), collections.Counter()
  for event in events:
    name = event.get('name')
    if event.get('ph') == 'X' and name in parts:
      by_part[parts[name]] += event['dur'] / 1e3 / steps
      by_op[f'{name} ({parts[name]})'] += event['dur'] / 1e3 / steps
  return {'by_part_ms': dict(by_part.most_common()),
          'top_ops_ms': dict(by_op.most_common(12))}


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_python(requested, enabled: bool = True,
                 find_spec=importlib.util.find_spec):
  """The Python to run the PyTorch reference with, or None for no comparison.

  `requested` (--torch_python) wins; otherwise this Python, if it can import
  torch.
  """
  if not enabled:
    return None
  if requested:
    return requested
  return sys.executable if find_spec('torch') is not None else None


def combine_repeats(ours: list[dict],
                    torch: dict[str, list[dict]] | None = None) -> dict:
  """One row from repeated runs: the median run, and median ratios.

  `torch[form][k]` ran right after `ours[k]`; each ratio compares runs that
  saw the same machine state. Adds, per torch form (TORCH_FORMS), its median
  images/s and `speedup_vs_torch_<form>` (median, min, max of the pair
  ratios), and `speedup_vs_torch_best`: per repeat, ours against the fastest
  torch form.
  """
  row = dict(sorted(ours, key=lambda r: r.get('images_per_s', 0))[
      len(ours) // 2])
  row['repeats'] = len(ours)
  torch = {d: runs for d, runs in (torch or {}).items() if runs}
  for dtype, runs in torch.items():
    ratios = [o['images_per_s'] / t['images_per_s']
              for o, t in zip(ours, runs)]
    row[f'torch_{dtype}_images_per_s'] = _median(
        [t['images_per_s'] for t in runs])
    if all('matmul_peak_gflop_per_s' in t for t in runs):
      row[f'torch_{dtype}_matmul_peak_gflop_per_s'] = _median(
          [t['matmul_peak_gflop_per_s'] for t in runs])
    row[f'speedup_vs_torch_{dtype}'] = _median(ratios)
    row[f'speedup_vs_torch_{dtype}_min'] = min(ratios)
    row[f'speedup_vs_torch_{dtype}_max'] = max(ratios)
  if torch:
    best = [max(runs[k]['images_per_s'] for runs in torch.values())
            for k in range(len(ours))]
    ratios = [o['images_per_s'] / b for o, b in zip(ours, best)]
    row['torch_best_images_per_s'] = _median(best)
    row['speedup_vs_torch_best'] = _median(ratios)
    row['speedup_vs_torch_best_min'] = min(ratios)
    row['speedup_vs_torch_best_max'] = max(ratios)
  return row


def _last_json_line(proc, cmd) -> dict:
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    sys.exit(f'error: {" ".join(cmd)} failed: {tail}')
  return json.loads(lines[-1])


def _run_child(model_name, algorithm, size, mode, batch_size, routing_iters,
               routing_memory, compute_dtype) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), '--child',
         f'--model={model_name}', f'--routing={algorithm or ""}',
         f'--size={size}', f'--mode={mode}', f'--batch={batch_size}',
         f'--routing_iters={routing_iters}',
         f'--compute_dtype={compute_dtype}',
         f'--routing_memory={routing_memory}',
         f'--routing_chunk={FLAGS.routing_chunk}',
         f'--microbatch_size={FLAGS.microbatch_size}',
         f'--steps={FLAGS.steps}', f'--warmup={FLAGS.warmup}',
         f'--memory_only={FLAGS.memory_only}', f'--profile={FLAGS.profile}']
  return _last_json_line(subprocess.run(cmd, capture_output=True, text=True),
                         cmd)


def torch_command(python, script, size, mode, batch_size, routing_iters,
                  form, steps, warmup) -> list[str]:
  """The torch_reference.py command for one configuration (`size` in SIZES)
  in one of TORCH_FORMS."""
  (height, _, channels), num_classes = SIZES[size]
  dtype = form.removeprefix('compiled_')
  return [python, script, f'--mode={mode}', f'--batch={batch_size}',
          f'--routing_iters={routing_iters}', f'--steps={steps}',
          f'--warmup={warmup}', f'--dtype={dtype}', f'--image_size={height}',
          f'--channels={channels}', f'--num_classes={num_classes}',
          *(['--compile'] if form != dtype else [])]


def torch_skip_note(model_name: str, algorithm: str | None) -> str | None:
  """Why the PyTorch reference cannot run beside this row, or None."""
  if model_name != 'capsnet':
    return f"no PyTorch reference for {model_name} (it is the paper's CapsNet)"
  if algorithm not in (None, 'dynamic'):
    return (f'no PyTorch reference for {algorithm} routing (it has dynamic '
            f'routing)')
  return None


def _run_torch(python, size, mode, batch_size, routing_iters,
               form) -> dict:
  cmd = torch_command(python, FLAGS.torch_script, size, mode,
                      batch_size, routing_iters, form, FLAGS.steps,
                      FLAGS.warmup)
  return _last_json_line(subprocess.run(cmd, capture_output=True, text=True),
                         cmd)


_COLUMNS = [('model', '{}'), ('routing', '{}'), ('size', '{}'),
            ('mode', '{}'), ('batch', '{}'),
            ('routing_iters', '{}'), ('routing_memory', '{}'),
            ('compute_dtype', '{}'), ('matmul_dtype', '{}'),
            ('images_per_s', '{:.1f}'), ('step_ms', '{:.0f}'),
            ('compile_s', '{:.1f}'), ('compiled_peak_mib', '{:.0f}'),
            ('peak_rss_mib', '{:.0f}'),
            ('fraction_of_matmul_peak', '{:.2f}'),
            ('torch_float32_images_per_s', '{:.1f}'),
            ('torch_bfloat16_images_per_s', '{:.1f}'),
            ('torch_compiled_float32_images_per_s', '{:.1f}'),
            ('torch_compiled_bfloat16_images_per_s', '{:.1f}'),
            ('speedup_vs_torch_float32', 'ratio'),
            ('speedup_vs_torch_best', 'ratio'), ('note', '{}')]


def _cell(row, key, fmt) -> str:
  if key not in row:
    return ''
  if fmt == 'ratio':  # Median (min-max) of the repeats' ratios.
    return (f'{row[key]:.2f}x ({row[key + "_min"]:.2f}-'
            f'{row[key + "_max"]:.2f})')
  return fmt.format(row[key])


def _print_table(rows, header: str):
  print(header)
  columns = [(k, f) for k, f in _COLUMNS if any(k in r for r in rows)]
  cells = [[_cell(r, k, f) for k, f in columns] for r in rows]
  widths = [max(len(k), *(len(c[i]) for c in cells))
            for i, (k, _) in enumerate(columns)]
  print('  '.join(k.rjust(w) for (k, _), w in zip(columns, widths)))
  for c in cells:
    print('  '.join(v.rjust(w) for v, w in zip(c, widths)))
  first = rows[0]
  peak = first.get('matmul_peak_gflop_per_s')
  print(f'device {first["device"]} x{first["num_devices"]}' +
        (f', dense matmul peak {peak:.0f} GFLOP/s in '
         f'{first["matmul_dtype"]}' if peak else ''))
  torch_peaks = [f'{dtype} {first[key]:.0f}' for dtype in TORCH_FORMS[:2]
                 if (key := f'torch_{dtype}_matmul_peak_gflop_per_s') in first]
  if torch_peaks:
    print(f'PyTorch dense matmul peak (GFLOP/s): {", ".join(torch_peaks)}')
  for row in rows:
    if 'profile' in row:
      _print_profile(row)


def _print_profile(row):
  profile = row['profile']
  print(f'\nprofile: {row["model"]} {row["size"]} {row["mode"]} batch '
        f'{row["batch"]}, {row["compute_dtype"]}: {row["step_ms"]:.0f} ms a '
        f'step; XLA op time per step ({sum(profile["by_part_ms"].values()):.0f}'
        f' ms) by model part, then the longest ops:')
  for title in ('by_part_ms', 'top_ops_ms'):
    for name, ms in profile[title].items():
      print(f'  {ms:8.1f} ms  {name}')


def _header(facts: dict, python) -> str:
  flags_text = ', '.join(facts['cpu_bf16_flags']) or 'no bf16 matmul flags'
  torch_text = (f'PyTorch reference: {python}' if python else
                'PyTorch reference: off (--memory_only, --notorch, or no '
                'torch here; pass --torch_python)')
  return (f'CPU {facts["cpu_model"]} ({facts["cpu_count"]} CPUs; '
          f'{flags_text}); XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}; '
          f'{torch_text}')


def _parse_ints(values, what):
  try:
    numbers = [int(v) for v in values]
  except ValueError:
    sys.exit(f'error: --{what} takes comma-separated integers, e.g. '
             f'--{what}=128.')
  if min(numbers) < 1:
    sys.exit(f'error: --{what} must be >= 1.')
  return numbers


def combinations(model_names, algorithms, sizes, modes, batches, iters,
                 memories, compute_dtypes=('float32',),
                 default_routing=lambda m: load_config(m).model.routing):
  """The runs, in table order: dicts of model, routing, size, mode, ...

  An empty `algorithms` means each model's config routing
  (`default_routing(model)`). The CapsNet-only routing memory varies for
  CapsNet only, and 'chunked' (dynamic routing only) pairs with 'dynamic'.
  Compute dtypes vary innermost (every model runs each: the ones without
  the field ignore it).
  """
  runs = []
  for model_name in model_names:
    for algorithm in algorithms or [default_routing(model_name)]:
      for size in sizes:
        for mode in modes:
          for batch_size in batches:
            for routing_iters in iters:
              for memory in memories if model_name == 'capsnet' else (
                  memories[:1]):
                if model_name == 'capsnet' and (
                    memory == 'chunked' and algorithm != 'dynamic'):
                  continue
                for compute_dtype in compute_dtypes:
                  runs.append(dict(
                      model_name=model_name, algorithm=algorithm, size=size,
                      mode=mode, batch_size=batch_size,
                      routing_iters=routing_iters, routing_memory=memory,
                      compute_dtype=compute_dtype))
  return runs


def measure_rows(runs, repeats, torch_forms, run_ours, run_torch=None):
  """Yields a row per run (`combinations`): `repeats` runs of ours, each
  followed by torch's forms (`run_torch(size, mode, batch_size,
  routing_iters, form)`; None: no torch), combined by `combine_repeats`.

  Torch's k-th run of a configuration is made once and shared by the rows
  that differ only in what torch does not have (compute_dtype,
  routing_memory): on a GPU a torch.compile run costs a minute.
  """
  torch_runs = {}  # (size, mode, batch, iterations, form, repeat) -> row.
  for run in runs:
    note = run_torch and torch_skip_note(run['model_name'], run['algorithm'])
    with_torch = run_torch and not note
    ours, torch = [], {form: [] for form in torch_forms}
    for k in range(repeats):
      ours.append(run_ours(**run))
      for form in (torch if with_torch else ()):
        key = (run['size'], run['mode'], run['batch_size'],
               run['routing_iters'], form, k)
        if key not in torch_runs:
          torch_runs[key] = run_torch(*key[:-1])
        torch[form].append(torch_runs[key])
    row = combine_repeats(ours, torch if with_torch else None)
    if note:
      row['note'] = note
    yield row


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  batches = _parse_ints(FLAGS.batch, 'batch')
  routings = _parse_ints(FLAGS.routing_iters, 'routing_iters')
  if FLAGS.repeats < 1:
    sys.exit('error: --repeats must be >= 1.')
  cpu_runtime.configure()  # As the training CLI does; before JAX runs.
  # After configure(): importing capsjax.routing starts JAX.
  from capsjax import conv  # pylint: disable=g-import-not-at-top
  from capsjax import models  # pylint: disable=g-import-not-at-top
  from capsjax import routing as routing_lib  # pylint: disable=g-import-not-at-top
  for name, allowed in (('model', models.MODELS), ('size', SIZES),
                        ('routing_memory', ('full', 'chunked')),
                        ('compute_dtype', conv.COMPUTE_DTYPES),
                        ('torch_forms', TORCH_FORMS)):
    unknown = set(FLAGS[name].value) - set(allowed)
    if unknown or not FLAGS[name].value:
      sys.exit(f'error: --{name} has {", ".join(sorted(unknown)) or "none"}; '
               f'choose from {", ".join(allowed)}.')
  algorithms = [a for a in FLAGS.routing if a]
  # The vector routings, and each model's own (EM for the matrix capsules).
  allowed = {**routing_lib.ROUTINGS,
             **{load_config(m).model.routing: None for m in FLAGS.model}}
  unknown = sorted(set(algorithms) - set(allowed))
  if unknown:
    sys.exit(f'error: --routing has {", ".join(unknown)}; choose from '
             f'{", ".join(allowed)} (iterations are --routing_iters).')
  modes = [FLAGS.mode] if FLAGS.mode else ['train', 'eval']
  if FLAGS.child:
    print(json.dumps(measure(
        modes[0], batches[0], routings[0], model_name=FLAGS.model[0],
        routing=(algorithms or [None])[0], size=FLAGS.size[0],
        compute_dtype=FLAGS.compute_dtype[0],
        routing_memory=FLAGS.routing_memory[0],
        routing_chunk=FLAGS.routing_chunk,
        microbatch_size=FLAGS.microbatch_size, steps=FLAGS.steps,
        warmup=FLAGS.warmup, memory_only=FLAGS.memory_only,
        profile=FLAGS.profile)))
    return
  python = None if FLAGS.memory_only else torch_python(FLAGS.torch_python,
                                                       FLAGS.torch)
  if python and not os.path.exists(FLAGS.torch_script):
    sys.exit(f'error: no PyTorch reference at {FLAGS.torch_script}; pass '
             f'--torch_script=PATH.')
  facts = cpu_facts()
  header = _header(facts, python)
  if FLAGS.json:
    print(json.dumps({'header': header, **facts}), flush=True)
  rows = []
  run_torch = python and functools.partial(_run_torch, python)
  for row in measure_rows(
      combinations(FLAGS.model, algorithms, FLAGS.size, modes, batches,
                   routings, FLAGS.routing_memory, FLAGS.compute_dtype),
      FLAGS.repeats, FLAGS.torch_forms, _run_child, run_torch):
    row.update(facts)
    if FLAGS.json:
      print(json.dumps(row), flush=True)
    rows.append(row)
  if not FLAGS.json:
    _print_table(rows, header)


if __name__ == '__main__':
  app.run(main)
