"""Tests for capsjax.models: the registry, `check` and `create_model`."""
import dataclasses
import functools
import os
import runpy

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from capsjax import checks
from capsjax import errors
from capsjax import losses
from capsjax import models
from capsjax import validation
from conftest import load_config
from conftest import ROOT
from conftest import small_config


def test_create_model_builds_the_named_model_from_the_config():
  config = small_config('quickstart', **{'model.routing_iters': 2})
  model = models.create_model(config.model, (28, 28, 1), 7)
  assert isinstance(model, models.CapsNet)
  assert (model.input_shape, model.num_classes) == ((28, 28, 1), 7)
  assert (model.routing_iters, model.conv1_channels, model.digit_dim) == (
      2, 8, 6)
  assert models.spec(config.model).objective is losses.margin_objective


def test_unknown_model_name_lists_the_registry():
  config = small_config('quickstart', **{'model.name': 'resnet'})
  with pytest.raises(errors.ConfigError) as e:
    models.create_model(config.model, (28, 28, 1), 10)
  assert "unknown model 'resnet'" in str(e.value)
  assert '--config.model.name to one of capsnet' in str(e.value)


@pytest.mark.parametrize('name', list(models.MODELS))
def test_every_entry_names_its_shipped_config(name):
  entry = models.MODELS[name]
  config = runpy.run_path(os.path.join(ROOT, entry.config))['get_config']()
  assert config.model.name == name
  # The config has every declared field, and they pass their checks.
  assert set(entry.fields) <= set(config.model)
  fields = models.check(config.model)
  assert list(fields) == list(entry.fields)


@pytest.mark.parametrize('name', list(models.MODELS))
def test_fields_are_the_class_attributes(name):
  entry = models.MODELS[name]
  config = runpy.run_path(os.path.join(ROOT, entry.config))['get_config']()
  shape = (32, 32, 1)
  model = models.create_model(config.model, shape, 5)
  assert isinstance(model, entry.model)
  attributes = {f.name for f in dataclasses.fields(entry.model)}
  assert set(entry.fields) <= attributes
  for field in entry.fields:
    value = config.model[field]
    assert getattr(model, field) == (
        tuple(value) if isinstance(value, (list, tuple)) else value), field
  if entry.figures:
    assert len(model.capsule_grid()) == 2


def test_check_takes_only_the_declared_fields():
  # configs/baseline_mnist.py keeps mnist.py's CapsNet fields beside its own.
  config = load_config('baseline_mnist', **{'model.routing_iters': 0})
  fields = models.check(config.model)
  assert 'routing_iters' not in fields
  assert fields['cnn_channels'] == (256, 256, 128)
  with pytest.raises(errors.ConfigError, match='model.cnn_kernel'):
    models.check(load_config('baseline_mnist',
                             **{'model.cnn_kernel': 0}).model)


def test_check_returns_the_checked_values():
  model_config = ml_collections.ConfigDict({
      **small_config('quickstart').model.to_dict(),
      'decoder_hidden': [16, 32], 'routing_iters': np.int64(2)})
  fields = models.check(model_config)
  assert fields['decoder_hidden'] == (16, 32)
  assert isinstance(fields['routing_iters'], int)
  assert not isinstance(fields['routing_iters'], np.integer)


def test_a_missing_field_is_a_one_line_error():
  config = small_config('quickstart')
  del config.model['routing_chunk']
  with pytest.raises(errors.ConfigError) as e:
    models.check(config.model)
  message = str(e.value)
  assert '\n' not in message
  assert 'config.model.routing_chunk' in message
  assert 'configs/mnist.py' in message


def test_cross_field_rules_run_in_check():
  config = load_config('efficient_capsnet', **{'model.primary_dim': 5})
  with pytest.raises(errors.ConfigError, match='primary_dim 5 must divide'):
    models.check(config.model)
  config = load_config('efficient_capsnet', **{'model.conv_kernels': (3, 3)})
  with pytest.raises(errors.ConfigError, match='conv_kernels must be a tuple '
                     'of 4 ints'):
    models.check(config.model)


def test_create_model_checks_the_image_shape():
  config = small_config('quickstart')
  with pytest.raises(errors.InputShapeError, match='conv1_kernel'):
    models.create_model(config.model, (16, 16, 1), 10)
  config = load_config('baseline_mnist', **{'model.cnn_padding': 'VALID'})
  with pytest.raises(errors.InputShapeError, match='cnn_padding'):
    models.create_model(config.model, (12, 12, 1), 10)


def test_check_config_builds_no_model(monkeypatch):
  built = []
  monkeypatch.setattr(models, 'create_model',
                      lambda *args: built.append(args))
  validation.check_config(load_config('quickstart'))
  assert not built
  with pytest.raises(errors.ConfigError, match='model.digit_dim'):
    validation.check_config(load_config('quickstart',
                                        **{'model.digit_dim': 0}))


class _Tiny(nn.Module):
  num_classes: int
  input_shape: tuple
  width: int = 3

  def check_input_shape(self):
    if self.input_shape[0] < 2:
      raise errors.InputShapeError('too small')

  @nn.compact
  def __call__(self, images, labels=None, *, train=False, reconstruct=True):
    h = nn.Dense(self.width)(images.reshape(images.shape[0], -1))
    return nn.Dense(self.num_classes)(h)


def test_a_new_model_is_one_registry_entry(monkeypatch):
  monkeypatch.setitem(models.MODELS, 'tiny', models.ModelSpec(
      _Tiny, {'width': functools.partial(checks.int_at_least, minimum=2)},
      losses.cross_entropy_objective, 'configs/tiny.py'))
  config = load_config('quickstart', **{'model.name': 'tiny'})
  config.model.width = 4
  model = models.create_model(config.model, (4, 4, 1), 3)
  assert isinstance(model, _Tiny) and model.width == 4
  params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
  assert params['params']['Dense_0']['kernel'].shape == (16, 4)
  config.model.width = 1
  with pytest.raises(errors.ConfigError, match='config.model.width must be '
                     'an int >= 2'):
    models.check(config.model)
  config.model.width = 4
  with pytest.raises(errors.InputShapeError):
    models.create_model(config.model, (1, 4, 1), 3)
