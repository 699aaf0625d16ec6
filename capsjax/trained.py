"""A trained run loaded back from its workdir, for analyses and figures.

    run = trained.load('/tmp/capsnet_quickstart')
    out = run.model.apply(run.variables, images)

WORKDIR/config.json rebuilds the dataset and the model; the latest checkpoint
under WORKDIR/checkpoints/ supplies the parameters.
"""
import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from capsjax import checkpoints
from capsjax import data
from capsjax import errors
from capsjax import models
from capsjax import train
from capsjax import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """Everything needed to run a trained model again.

  Attributes:
    workdir: the run's workdir (absolute).
    config: its config.json as a ConfigDict.
    dataset: the dataset the config names, loaded.
    model: the model the config builds for that dataset.
    params: the parameters of the latest checkpoint.
    step: the training step of that checkpoint.
    batch_stats: batch norm's running averages, for models that have them.
  """
  workdir: str
  config: ml_collections.ConfigDict
  dataset: data.Dataset
  model: nn.Module
  params: Any
  step: int
  batch_stats: Any = None

  @property
  def variables(self) -> dict:
    """`model.apply`'s variables: params, and batch_stats if any."""
    if self.batch_stats is None:
      return {'params': self.params}
    return {'params': self.params, 'batch_stats': self.batch_stats}


# Config fields added after runs were first recorded, with the value that
# does what those runs did. A recorded config.json lacking one gets it here;
# this is the only place where a missing field has a default.
ADDED_FIELDS = {
    'model.name': 'capsnet',
    'model.routing': 'dynamic',
    'model.routing_memory': 'full',
    'model.routing_chunk': 128,
    'model.num_targets': 1,
    'dataset.image_feature': 'image',
    'dataset.label_feature': 'label',
    'dataset.read_size': 0,
    'dataset.crop_size': 0,
    'dataset.brightness_delta': 0.0,
    'dataset.contrast_delta': 0.0,
    'dataset.standardize': False,
    'dataset.random_flip': False,
    'dataset.canvas_size': 0,
    'dataset.multimnist': False,
}


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run recorded in WORKDIR/config.json.

  Raises:
    errors.ConfigError: if the workdir or its config.json is missing or
      unreadable.
  """
  if not os.path.isdir(workdir):
    raise errors.ConfigError(f'workdir {workdir} does not exist; pass the '
                            f'--workdir of a training run.')
  path = workdir_lib.path(workdir, workdir_lib.CONFIG)
  try:
    with open(path) as f:
      recorded = json.load(f)
  except FileNotFoundError:
    raise errors.ConfigError(
        f'{workdir} has no config.json, so it is not a capsjax workdir; pass '
        f'the --workdir of a `python -m capsjax.main` run.') from None
  except (OSError, ValueError) as e:
    raise errors.ConfigError(f'cannot read {path} ({e}); rerun training in '
                            f'that workdir to rewrite it.') from None
  for dotted, value in ADDED_FIELDS.items():
    section, name = dotted.split('.')
    recorded.setdefault(section, {}).setdefault(name, value)
  return ml_collections.ConfigDict(recorded)


def load(workdir: str) -> TrainedRun:
  """Loads the config, dataset, model and latest parameters of a workdir.

  Raises:
    errors.ConfigError: no config.json, or no checkpoint yet.
    errors.CheckpointMismatchError: the checkpoint does not fit the model
      config.json describes.
    errors.DataError: the run's dataset cannot be loaded here.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = read_config(workdir)
  ckpt_dir = workdir_lib.path(workdir, workdir_lib.CHECKPOINTS)
  no_checkpoint = errors.ConfigError(
      f'{workdir} has no checkpoint yet; train first with python -m '
      f'capsjax.main --config=... --workdir={workdir}.')
  # Checked before opening the manager, which would create the directory.
  if not os.path.isdir(ckpt_dir):
    raise no_checkpoint
  ckpt = checkpoints.Checkpointer(ckpt_dir)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise no_checkpoint
    dataset = data.load(config.dataset)
    preprocessing = data.Preprocessing.from_config(config.dataset, dataset)
    model = models.create_model(
        config.model, preprocessing.output_shape(dataset.image_shape),
        dataset.num_classes)
    # Only the shapes: initialising for real would compile the model's init.
    target = jax.eval_shape(
        functools.partial(train.create_train_state, config, model),
        jax.random.key(0))
    state, _ = ckpt.restore(step, target, config.model.to_dict())
  finally:
    ckpt.close()
  return TrainedRun(workdir=workdir, config=config, dataset=dataset,
                    model=model, params=state.params, step=int(state.step),
                    batch_stats=getattr(state, 'batch_stats', None))
