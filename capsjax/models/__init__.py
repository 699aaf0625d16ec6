"""The models, one module each, and the registry that builds them by name.

  capsnet             CapsNet: Sabour, Frosst & Hinton (2017), Section 4
  baseline_cnn        BaselineCNN: the same paper's CNN baseline, Section 5
  efficient_capsnet   EfficientCapsNet: Mazzia, Salvetti & Chiaberge (2021)
  matrix_capsnet_em   MatrixCapsNetEM: Hinton, Sabour & Frosst (2018), Sec. 3

Each module declares `FIELDS`, the `config.model` fields its model is built
from (the class attributes of the same names) with their checks, and may
declare `check_fields`, its rules across fields. `create_model(config.model,
image_shape, num_classes)` looks `config.model.name` up in `MODELS`, checks
the declared fields once (`check`) and builds `Model(**fields)`. A new model
is one module plus one entry in `MODELS`; the trainer and the experiments do
not change.
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn

from capsjax import checks
from capsjax import errors
from capsjax import losses
from capsjax.models import baseline_cnn
from capsjax.models import capsnet
from capsjax.models import efficient_capsnet
from capsjax.models import matrix_capsnet_em
from capsjax.models.baseline_cnn import BaselineCNN
from capsjax.models.baseline_cnn import BaselineOutput
from capsjax.models.capsnet import CapsNet
from capsjax.models.capsnet import CapsNetOutput
from capsjax.models.capsnet import primary_grid
from capsjax.models.efficient_capsnet import efficient_grid
from capsjax.models.efficient_capsnet import EfficientCapsNet
from capsjax.models.matrix_capsnet_em import matrix_grids
from capsjax.models.matrix_capsnet_em import MatrixCapsNetEM
from capsjax.models.matrix_capsnet_em import MatrixCapsOutput


# Far above any published use (1 to 3 dynamic, 3 EM iterations).
MAX_ROUTING_ITERS = 100


def _no_rules(fields: dict) -> None:
  del fields


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One entry of `MODELS`.

  Attributes:
    model: the `nn.Module` class. Its attributes are `num_classes`,
      `input_shape` and the `fields`; `check_input_shape()` raises
      errors.InputShapeError when `input_shape` does not fit. It is called as
      `model.apply(variables, images, labels=None, *, train=False,
      reconstruct=True, rngs=...)` and returns a NamedTuple with `scores:
      [B, K]` (higher is more likely) and `reconstructions` (or None).
    fields: `config.model` field -> `check(value, 'model.FIELD') -> value`,
      raising errors.ConfigError (see `capsjax.checks`).
    objective: `objective(outputs, batch, loss_config, step) -> {name: [B]}`
      with the total under 'loss' (see `losses`).
    config: the shipped config that trains it, from the repository root.
    check_fields: `check_fields(fields)`, the rules across the checked
      fields; raises errors.ConfigError.
    figures: what `experiments/visualize.py` draws of it: 'capsules' (class
      capsules, routing coefficients and a decoder; the model has
      `capsule_grid()`, the (H', W') grid of its routed capsules), 'em'
      (matrix capsules: EM assignments and activations, `capsule_grid()`
      too) or None.
  """
  model: type[nn.Module]
  fields: Mapping[str, Callable[[Any, str], Any]]
  objective: Callable[..., dict]
  config: str
  check_fields: Callable[[dict], None] = _no_rules
  figures: Optional[str] = None


# config.model.name -> its ModelSpec.
MODELS: dict[str, ModelSpec] = {
    'capsnet': ModelSpec(
        CapsNet, capsnet.FIELDS, losses.margin_objective, 'configs/mnist.py',
        check_fields=capsnet.check_fields, figures='capsules'),
    'matrix_capsnet_em': ModelSpec(
        MatrixCapsNetEM, matrix_capsnet_em.FIELDS, losses.spread_objective,
        'configs/smallnorb_em.py', figures='em'),
    'efficient_capsnet': ModelSpec(
        EfficientCapsNet, efficient_capsnet.FIELDS, losses.margin_objective,
        'configs/efficient_capsnet.py',
        check_fields=efficient_capsnet.check_fields, figures='capsules'),
    'baseline_cnn': ModelSpec(
        BaselineCNN, baseline_cnn.FIELDS, losses.cross_entropy_objective,
        'configs/baseline_mnist.py'),
}


def spec(model_config) -> ModelSpec:
  """`MODELS[model_config.name]`, or a ConfigError naming the choices."""
  name = model_config.name
  if name not in MODELS:
    raise errors.ConfigError(
        f'unknown model {name!r}; set --config.model.name to one of '
        f'{", ".join(MODELS)}.')
  return MODELS[name]


def check(model_config) -> dict:
  """The fields `model_config`'s model declares, checked: field -> value.

  Fields of other models in the block are ignored.

  Raises:
    errors.ConfigError: an unknown name, a missing or bad field, or fields
      that do not fit together, named in the one-line message.
  """
  entry = spec(model_config)
  fields = {}
  for field, check_value in entry.fields.items():
    if field not in model_config:
      raise errors.ConfigError(
          f'config.model has no field {field!r}, which model '
          f'{model_config.name!r} needs; add config.model.{field} (see '
          f'{entry.config}).')
    fields[field] = check_value(model_config[field], f'model.{field}')
  if 'routing_iters' in fields:
    # Every iteration is traced and compiled: a huge count hangs the start.
    checks.int_in(fields['routing_iters'], 'model.routing_iters', 1,
                  MAX_ROUTING_ITERS, 3)
  entry.check_fields(fields)
  return fields


def create_model(model_config, image_shape: Sequence[int],
                 num_classes: int) -> nn.Module:
  """The model `model_config.name` names, built for `(H, W, C)` images.

  Args:
    model_config: `config.model` (read by item access and `in`).
    image_shape: `(H, W, C)` of the images the model will see.
    num_classes: number of classes.

  Raises:
    errors.ConfigError: an unknown name or a bad field, named in the message.
    errors.InputShapeError: the images do not fit the model.
  """
  entry = spec(model_config)
  model = entry.model(num_classes=num_classes, input_shape=tuple(image_shape),
                      **check(model_config))
  model.check_input_shape()
  return model
