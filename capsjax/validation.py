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
from capsjax import data
from capsjax import errors
from capsjax import models
from capsjax.data import multimnist
from capsjax.data import sources


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def _int_at_least(config, name: str, minimum: int, example: int,
                  why: str = '') -> None:
  checks.int_at_least(_get(config, name), name, minimum, example, why=why)


def _number(config, name: str, low: float, high: float, example,
            low_open: bool = False) -> None:
  checks.number_in(_get(config, name), name, low, high, example,
                   low_open=low_open)


def _check_dataset(config) -> None:
  """Every field of config.dataset, then how the model fits MultiMNIST."""
  data.Preprocessing.from_config(config.dataset)
  sources.check_config(config.dataset)
  multimnist.check_config(config.dataset)
  multi = config.dataset.multimnist
  targets = 2 if multi else 1
  # Only models that reconstruct one digit per target declare num_targets.
  if ('num_targets' in models.spec(config.model).fields
      and config.model.num_targets != targets):
    raise errors.ConfigError(
        f'config.model.num_targets must be {targets} with '
        f'dataset.multimnist={multi}; set '
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
  if (not checks.is_int(micro) or micro < 0
      or (micro and config.batch_size % micro)):
    raise errors.ConfigError(
        f'config.microbatch_size must be 0 (off) or an int that divides '
        f'batch_size {config.batch_size}, got {micro!r}; set '
        f'--config.microbatch_size=0.')
  _check_dataset(config)
  for name in ('m_plus', 'm_minus', 'lambda_'):
    _number(config, f'loss.{name}', 0.0, 1.0, {'m_plus': 0.9, 'm_minus': 0.1,
                                               'lambda_': 0.5}[name])
  _number(config, 'loss.reconstruction_weight', 0.0, math.inf, 0.0005)
  _check_spread(config)
  models.check(config.model)


def _check_spread(config) -> None:
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
  if dataset.pairs and len(set(dataset.train.labels.tolist())) < 2:
    raise errors.ConfigError(
        'MultiMNIST needs training digits of at least two classes; use a '
        'dataset with several classes or --config.dataset.multimnist=False.')
  preprocessing = data.Preprocessing.from_config(config.dataset, dataset)
  # The model sees the images the preprocessing makes (cropped).
  model = models.create_model(
      config.model, preprocessing.output_shape(dataset.image_shape),
      dataset.num_classes)
  _check_model_fits(model)
  return model


def _memory_bytes() -> int:
  """This process's first device's memory, or the host's for the CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return stats['bytes_limit']
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def _check_model_fits(model) -> None:
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
