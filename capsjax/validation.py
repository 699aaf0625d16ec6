"""Every check of a training config, run before the workdir is touched.

`check_config(config)` needs only the config; `check_data(config, dataset)`
needs the loaded data (image size, split sizes) and returns the model the
config builds for it. `train.train_and_evaluate` calls both before it creates,
reads or writes anything in the workdir, so a rejected run leaves an existing
workdir exactly as it was. Each error is one line naming the `--config.FIELD`
to change.
"""
import math
import os

import jax
import jax.numpy as jnp

from capsjax import checks
from capsjax import datasets
from capsjax import errors
from capsjax import input_pipeline
from capsjax import models

# Far above any published use (1 to 3 dynamic, 3 EM iterations).
MAX_ROUTING_ITERS = 100
# Image sides and generated test sets that a host could hold in memory.
MAX_IMAGE_SIZE = 4096
MAX_GENERATED_EXAMPLES = 10**7


def _is_int(value) -> bool:
  # `bool` is an `int` subclass, but `True` as a batch size is a bug.
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def _int_at_least(config, name: str, minimum: int, example: int,
                  why: str = '') -> None:
  value = _get(config, name)
  if not _is_int(value) or value < minimum:
    raise errors.ConfigError(
        f'config.{name} must be an int >= {minimum}{why}, got {value!r}; set '
        f'--config.{name}={example}.')


def _number(config, name: str, low: float, high: float, example,
            low_open: bool = False) -> None:
  value = _get(config, name)
  ok = _is_number(value) and value <= high and (
      value > low if low_open else value >= low)
  if not ok:
    bracket = '(' if low_open else '['
    raise errors.ConfigError(
        f'config.{name} must be a number in {bracket}{low}, {high}], got '
        f'{value!r}; set --config.{name}={example}.')


def _bool(config, name: str) -> None:
  value = _get(config, name)
  if not isinstance(value, bool):
    raise errors.ConfigError(f'config.{name} must be True or False, got '
                             f'{value!r}; set --config.{name}=False.')


def _check_composition(config) -> None:
  """The random_flip, canvas and MultiMNIST fields of config.dataset."""
  _bool(config, 'dataset.random_flip')
  _bool(config, 'dataset.multimnist')
  _int_at_least(config, 'dataset.canvas_size', 0, 40, ' (0 = off)')
  _int_at_least(config, 'dataset.multimnist_shift', 0, 4)
  _int_at_least(config, 'dataset.multimnist_test_size', 1, 10000)
  # Generated in memory: bounded so that a typo is an error, not a crash.
  checks.int_in(config.dataset.canvas_size, 'dataset.canvas_size', 0,
                MAX_IMAGE_SIZE, 40)
  checks.int_in(config.dataset.multimnist_shift, 'dataset.multimnist_shift',
                0, MAX_IMAGE_SIZE, 4)
  checks.int_in(config.dataset.multimnist_test_size,
                'dataset.multimnist_test_size', 1, MAX_GENERATED_EXAMPLES,
                10000)
  dataset = config.dataset
  if dataset.multimnist and dataset.canvas_size:
    raise errors.ConfigError(
        'config.dataset.multimnist and canvas_size cannot be combined; set '
        '--config.dataset.canvas_size=0.')
  composed = ('multimnist' if dataset.multimnist else
              'canvas_size' if dataset.canvas_size else None)
  if composed and dataset.max_shift:
    raise errors.ConfigError(
        f'config.dataset.max_shift must be 0 with dataset.{composed} (the '
        f'digits are already placed at random); set '
        f'--config.dataset.max_shift=0.')
  targets = 2 if dataset.multimnist else 1
  if config.model.name == 'capsnet' and config.model.num_targets != targets:
    raise errors.ConfigError(
        f'config.model.num_targets must be {targets} with '
        f'dataset.multimnist={dataset.multimnist}; set '
        f'--config.model.num_targets={targets}.')


def check_config(config) -> None:
  """Checks every field that can be wrong without looking at the data.

  Raises:
    errors.ConfigError: naming the first bad field and a value that works.
  """
  for name in ('batch_size', 'eval_batch_size', 'num_train_steps',
               'eval_every_steps', 'checkpoint_every_steps', 'log_every_steps'):
    _int_at_least(config, name, 1, 100)
  _int_at_least(config, 'seed', 0, 0)
  # jax.random.key and numpy's generators take the seed as a 32-bit word.
  checks.int_in(config.seed, 'seed', 0, 2**32 - 1, 0)
  _int_at_least(config, 'max_checkpoints_to_keep', 1, 2,
                ' (resuming needs a checkpoint)')
  _int_at_least(config, 'lr_decay_steps', 1, 2000,
                ' (steps between decays; --config.lr_decay_rate=1 turns decay '
                'off)')
  _number(config, 'learning_rate', 0.0, math.inf, 0.001, low_open=True)
  _number(config, 'lr_decay_rate', 0.0, 1.0, 0.96, low_open=True)
  micro = config.microbatch_size
  if not _is_int(micro) or micro < 0 or (micro and config.batch_size % micro):
    raise errors.ConfigError(
        f'config.microbatch_size must be 0 (off) or an int that divides '
        f'batch_size {config.batch_size}, got {micro!r}; set '
        f'--config.microbatch_size=0.')
  _int_at_least(config, 'dataset.max_shift', 0, 2)
  if config.dataset.source == 'folder':
    datasets.check_folder_config(config.dataset)
  _check_composition(config)
  for name in ('m_plus', 'm_minus', 'lambda_'):
    _number(config, f'loss.{name}', 0.0, 1.0, {'m_plus': 0.9, 'm_minus': 0.1,
                                               'lambda_': 0.5}[name])
  _number(config, 'loss.reconstruction_weight', 0.0, math.inf, 0.0005)
  _check_preprocess_and_spread(config)
  models.create_model(config.model, None, 2)
  if 'routing_iters' in config.model:
    # After the model's own check of >= 1. Every iteration is traced and
    # compiled: a huge count hangs the start.
    checks.int_in(config.model.routing_iters, 'model.routing_iters', 1,
                  MAX_ROUTING_ITERS, 3)


def _check_preprocess_and_spread(config) -> None:
  dataset = config.dataset
  _int_at_least(config, 'dataset.crop_size', 0, 32, ' (0 = no crop)')
  _int_at_least(config, 'dataset.read_size', 0, 48, ' (0 = keep the size)')
  checks.int_in(config.dataset.read_size, 'dataset.read_size', 0,
                MAX_IMAGE_SIZE, 48)
  _number(config, 'dataset.brightness_delta', 0.0, math.inf, 0)
  _number(config, 'dataset.contrast_delta', 0.0, 0.99, 0)
  if not isinstance(dataset.standardize, bool):
    raise errors.ConfigError(
        f'config.dataset.standardize must be True or False, got '
        f'{dataset.standardize!r}; set --config.dataset.standardize=False.')
  # The spread loss's fields exist only in configs of models trained with it.
  if 'spread_margin_steps' in config.loss:
    _int_at_least(config, 'loss.spread_margin_steps', 1, 10000)
    _number(config, 'loss.spread_margin_start', 0.0, 1.0, 0.2)
    _number(config, 'loss.spread_margin_end', 0.0, 1.0, 0.9)


def check_data(config, dataset):
  """Checks the config against the loaded data; returns the model it builds.

  Raises:
    errors.ConfigError: a batch larger than the training split, shifts
      that move the images out of view, or crops larger than the images.
    errors.InputShapeError: the images do not fit the model's convolutions.
  """
  if config.batch_size > dataset.train.num_examples:
    raise errors.ConfigError(
        f'batch_size {config.batch_size} is larger than the training split '
        f'({dataset.train.num_examples} examples); lower --config.batch_size.')
  height, width = dataset.image_shape[:2]
  if dataset.pairs and len(set(dataset.train.labels.tolist())) < 2:
    raise errors.ConfigError(
        'MultiMNIST needs training digits of at least two classes; use a '
        'dataset with several classes or --config.dataset.multimnist=False.')
  if config.dataset.max_shift >= min(height, width):
    raise errors.ConfigError(
        f'max_shift {config.dataset.max_shift} would shift {height}x{width} '
        f'images out of view; set --config.dataset.max_shift below '
        f'{min(height, width)} (the paper uses 2).')
  crop_size = config.dataset.crop_size
  if crop_size > min(height, width):
    raise errors.ConfigError(
        f'crop_size {crop_size} is larger than the {height}x{width} images; '
        f'set --config.dataset.crop_size to at most {min(height, width)} '
        f'(0 = no crop).')
  try:
    # The model sees the images the input pipeline makes (cropped).
    model = models.create_model(
        config.model,
        input_pipeline.output_image_shape(dataset.image_shape, crop_size),
        dataset.num_classes)
  except errors.InputShapeError as e:
    # The model's message has the arithmetic; name the flags that fix it.
    raise errors.InputShapeError(
        f'{str(e).rstrip(".")} (--config.model.conv1_kernel, '
        f'--config.model.primary_kernel).') from None
  _check_model_fits(config, model)
  return model


def _memory_bytes() -> int:
  """This process's first device's memory, or the host's for the CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return stats['bytes_limit']
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def _check_model_fits(config, model) -> None:
  """Refuses model sizes whose parameters and Adam's two moments cannot fit
  in memory, or whose array shapes overflow (found by tracing the init)."""
  images = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
  labels = jax.ShapeDtypeStruct((1,), jnp.int32)
  try:
    shapes = jax.eval_shape(model.init, jax.random.key(0), images, labels)
  except (OverflowError, TypeError) as e:
    raise errors.ConfigError(
        f'config.model builds arrays too large to index ({type(e).__name__}: '
        f'{" ".join(str(e).split())[:120]}); lower its sizes, e.g. '
        f'--config.model.conv1_channels.') from None
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  # Parameters, gradients and Adam's two moments, in float32.
  needed, available = 4 * 4 * num_params, _memory_bytes()
  if needed > available:
    raise errors.ConfigError(
        f'config.model has {num_params:,} parameters, whose training state '
        f'needs {needed / 2**30:.1f} GiB, more than the '
        f'{available / 2**30:.1f} GiB of memory here; lower its sizes, e.g. '
        f'--config.model.conv1_channels.')
