"""Every check of a training config, run before the workdir is touched.

`check_config(config)` needs only the config; `check_data(config, dataset)`
needs the loaded data (image size, split sizes) and returns the model the
config builds for it. `train.train_and_evaluate` calls both before it creates,
reads or writes anything in the workdir, so a rejected run leaves an existing
workdir exactly as it was. Each error is one line naming the `--config.FIELD`
to change.
"""
import math

from capsjax import checks
from capsjax import datasets
from capsjax import errors
from capsjax import input_pipeline
from capsjax import models


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


def _bool(config, name: str) -> None:
  checks.boolean(_get(config, name), name)


def _check_composition(config) -> None:
  """The random_flip, canvas and MultiMNIST fields of config.dataset."""
  _bool(config, 'dataset.random_flip')
  _bool(config, 'dataset.multimnist')
  _int_at_least(config, 'dataset.canvas_size', 0, 40, ' (0 = off)')
  _int_at_least(config, 'dataset.multimnist_shift', 0, 4)
  _int_at_least(config, 'dataset.multimnist_test_size', 1, 10000)
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
  # Only models that reconstruct one digit per target declare num_targets.
  if ('num_targets' in models.spec(config.model).fields
      and config.model.num_targets != targets):
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
  _int_at_least(config, 'dataset.max_shift', 0, 2)
  if config.dataset.source == 'folder':
    datasets.check_folder_config(config.dataset)
  _check_composition(config)
  for name in ('m_plus', 'm_minus', 'lambda_'):
    _number(config, f'loss.{name}', 0.0, 1.0, {'m_plus': 0.9, 'm_minus': 0.1,
                                               'lambda_': 0.5}[name])
  _number(config, 'loss.reconstruction_weight', 0.0, math.inf, 0.0005)
  _check_preprocess_and_spread(config)
  models.check(config.model)


def _check_preprocess_and_spread(config) -> None:
  _int_at_least(config, 'dataset.crop_size', 0, 32, ' (0 = no crop)')
  _int_at_least(config, 'dataset.read_size', 0, 48, ' (0 = keep the size)')
  _number(config, 'dataset.brightness_delta', 0.0, math.inf, 0)
  _number(config, 'dataset.contrast_delta', 0.0, 0.99, 0)
  _bool(config, 'dataset.standardize')
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
  # The model sees the images the input pipeline makes (cropped).
  return models.create_model(
      config.model,
      input_pipeline.output_image_shape(dataset.image_shape, crop_size),
      dataset.num_classes)
