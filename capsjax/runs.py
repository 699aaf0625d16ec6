"""A trained run reloaded from its workdir, and the one way to apply its model.

    run = runs.load('/tmp/capsnet_quickstart')
    out = run.apply(run.dataset.test.images[:8])   # uint8, as the splits hold
    print(out.scores.argmax(-1), run.evaluate()['accuracy'])

WORKDIR/config.json rebuilds the dataset, its preprocessing and the model; the
latest checkpoint under WORKDIR/checkpoints/ supplies the variables. Outside
the training loop, every trained model is applied through `Run.apply` (images
prepared as the run's evaluation prepared them, with all the model's
variables) or `Run.evaluate` (the metrics `train_and_evaluate` reports, by the
same code). `predict` classifies image files for `python -m capsjax.predict`.
"""
import dataclasses
import functools
import json
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from capsjax import checkpoints
from capsjax import data
from capsjax import errors
from capsjax import models
from capsjax import parallel
from capsjax import train
from capsjax import workdir as workdir_lib

# Class scores shown per image by `predict`.
TOP_K = 2


@dataclasses.dataclass(frozen=True)
class Run:
  """Everything needed to apply a trained model again.

  Attributes:
    workdir: the run's workdir (absolute).
    config: its config.json as a ConfigDict.
    dataset: the dataset the config names, loaded.
    preprocessing: how the run turned the dataset's images into model inputs
      (`Run.apply` and `Run.evaluate` use its evaluation part).
    model: the model the config builds for that dataset.
    state: the TrainState of the latest checkpoint.
  """
  workdir: str
  config: ml_collections.ConfigDict
  dataset: data.Dataset
  preprocessing: data.Preprocessing
  model: nn.Module
  state: Any

  @property
  def step(self) -> int:
    """The training step of the checkpoint."""
    return int(self.state.step)

  @property
  def params(self):
    """The trained parameters (`variables['params']`)."""
    return self.state.params

  @property
  def variables(self) -> dict:
    """`model.apply`'s variables: params, and batch_stats if the model has
    them."""
    return train.model_variables(self.state)

  @functools.cached_property
  def _apply(self):
    return jax.jit(self.model.apply,
                   static_argnames=('reconstruct', 'return_couplings'))

  def apply(self, images: np.ndarray, *, reconstruct: bool = False,
            return_couplings: bool = False,
            batch_size: Optional[int] = None):
    """The model's outputs for uint8 `images: [N, H, W, C]`.

    The images are prepared as the run's evaluation prepared its test split
    (central crop, /255, standardization: `data.eval_images`) and run in
    batches of one fixed size (one compilation), at most
    `config.eval_batch_size`. A decoder is masked by the predicted class, as
    at test time.

    Returns:
      The model's output NamedTuple with each array field as a numpy array of
      all N rows (fields the model leaves None stay None).
    """
    images = np.asarray(images)
    # Only capsule models route; the others do not take the argument.
    extra = {'return_couplings': True} if return_couplings else {}
    size = min(batch_size or self.config.eval_batch_size, len(images))
    parts = []
    for start in range(0, len(images), size):
      chunk = data.eval_images(images[start:start + size], self.preprocessing)
      rows = len(chunk)
      chunk = np.pad(chunk, ((0, size - rows),) + ((0, 0),) * (chunk.ndim - 1))
      out = self._apply(self.variables, jnp.asarray(chunk),
                        reconstruct=reconstruct, **extra)
      parts.append(jax.tree.map(lambda x, rows=rows: np.asarray(x)[:rows],
                                out))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)

  def evaluate(self, split: Optional[data.Split] = None) -> dict[str, float]:
    """The mean test metrics of `split` (default: the test split), computed
    as `train_and_evaluate` computes them at each evaluation."""
    mesh = parallel.create_mesh()
    objective = models.spec(self.config.model).objective
    eval_step_fn = parallel.jit_eval_step(
        functools.partial(train.eval_step, objective=objective,
                          loss_config=self.config.loss), mesh)
    state = jax.device_put(self.state, parallel.replicated(mesh))
    return train.evaluate(eval_step_fn, state,
                          self.dataset.test if split is None else split,
                          self.config.eval_batch_size, mesh,
                          self.preprocessing)


# Config fields added after runs were first recorded, with the value that
# does what those runs did. A recorded config.json lacking one gets it here;
# this is the only place where a missing field has a default.
ADDED_FIELDS = {
    'model.name': 'capsnet',
    'model.routing': 'dynamic',
    'model.routing_memory': 'full',
    'model.routing_chunk': 128,
    'model.num_targets': 1,
    'model.readout': 'length',
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


def kept_steps(workdir: str) -> list[int]:
  """The steps of the checkpoints a run kept, oldest first ([] if none)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  ckpt_dir = workdir_lib.path(workdir, workdir_lib.CHECKPOINTS)
  # Checked before opening the manager, which would create the directory.
  if not os.path.isdir(ckpt_dir):
    return []
  ckpt = checkpoints.Checkpointer(ckpt_dir, max_to_keep=None)  # only reads
  try:
    return ckpt.all_steps()
  finally:
    ckpt.close()


def load(workdir: str, step: Optional[int] = None) -> Run:
  """Loads the config, dataset, model and variables of a workdir.

  Args:
    workdir: a run's workdir.
    step: the checkpoint to load (one the run kept); default the latest.

  Raises:
    errors.ConfigError: no config.json, no checkpoint yet, or none at `step`.
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
  ckpt = checkpoints.Checkpointer(ckpt_dir,
                                  max_to_keep=config.max_checkpoints_to_keep)
  try:
    kept = ckpt.all_steps()
    if not kept:
      raise no_checkpoint
    if step is None:
      step = kept[-1]
    elif step not in kept:
      raise errors.ConfigError(
          f'{workdir} has no checkpoint at step {step}; it kept steps '
          f'{", ".join(map(str, kept))} (pick one of them).')
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
  return Run(workdir=workdir, config=config, dataset=dataset,
             preprocessing=preprocessing, model=model, state=state)


# -------------------------------------------- predictions for image files --


def image_options(run: Run) -> data.ImageOptions:
  """How to read a new image for `run`'s model, as its training images were.

  Raises:
    errors.DataError: the model's images have neither 1 nor 3 channels.
  """
  height, width, channels = run.dataset.image_shape
  if channels not in (1, 3):
    raise errors.DataError(
        f'the model of {run.workdir} takes {channels}-channel images; predict '
        f'reads only grayscale or RGB files, so classify these with '
        f'model.apply (see capsjax.runs).')
  resize = 'stretch'
  if run.config.dataset.source == 'folder':
    resize = data.image_options(run.config.dataset).resize
  return data.ImageOptions(size=(height, width), channels=channels,
                           resize=resize)


def _check_decoder_trained(run: Run) -> None:
  weight = run.config.get('loss', {}).get('reconstruction_weight', None)
  if weight is not None and weight <= 0:
    raise errors.ConfigError(
        f'{run.workdir} was trained with loss.reconstruction_weight=0, so its '
        f'decoder is untrained; drop --save_reconstructions.')


def _reconstruction_names(paths: Sequence[str]) -> list[str]:
  """`STEM.png` per image, numbered when two images share a stem."""
  names, used = [], set()
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = f'{stem}.png', 1
    while name in used:
      n += 1
      name = f'{stem}_{n}.png'
    used.add(name)
    names.append(name)
  return names


def write_reconstructions(reconstructions: np.ndarray, paths: Sequence[str],
                         out_dir: str) -> list[str]:
  """Writes `[N, H, W, C]` images in [0, 1] as PNGs; returns their paths."""
  import PIL.Image  # pylint: disable=g-import-not-at-top
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise errors.ConfigError(
        f'cannot create {out_dir} ({e.strerror}); pass a writable '
        f'--save_reconstructions directory.') from None
  pixels = np.round(np.clip(reconstructions, 0, 1) * 255).astype(np.uint8)
  written = []
  for image, name in zip(pixels, _reconstruction_names(paths)):
    path = os.path.join(out_dir, name)
    pil = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    workdir_lib.write_atomic(path, lambda tmp, pil=pil: pil.save(tmp, 'PNG'))
    written.append(path)
  return written


def _class(index: int, class_names) -> dict[str, Any]:
  return {'class': index,
          'name': class_names[index] if class_names else None}


def predict(workdir: str, args: Sequence[str], *,
            save_reconstructions: Optional[str] = None) -> dict[str, Any]:
  """Classifies the images `args` (files and directories) with `workdir`.

  Each image is read with `data.read_image`, as the folder source reads its
  training images: a folder run uses its `dataset.image_size`,
  `dataset.resize` and channel count; any other run stretches the image to
  its dataset's (H, W) and channel count. `Run.apply` then prepares it as the
  run's evaluation did. Works for every model in `models.MODELS`.

  Returns:
    A JSON-ready dict: `workdir`, `step`, `dataset`, `class_names` (or
    None), and `predictions`, one per image in order: `image` (its path),
    `predicted` and `top` (`{'class', 'name', 'score'}`, best first, 2 of
    them), `scores` (`[K]`, one per class: a CapsNet's capsule lengths, or
    its logits with readout='linear') and `reconstruction` (the PNG
    written, or None).

  Raises:
    errors.UserError: no workdir or checkpoint, an unreadable or missing
      image, or reconstructions asked of a model without a trained decoder.
  """
  paths = data.image_paths(args)
  run = load(workdir)
  reconstruct = save_reconstructions is not None
  if reconstruct:
    _check_decoder_trained(run)
  options = image_options(run)
  images = np.stack([data.read_image(p, options) for p in paths])
  out = run.apply(images, reconstruct=reconstruct)
  if reconstruct and out.reconstructions is None:
    raise errors.ConfigError(
        f'the {run.config.model.name!r} model of {run.workdir} has no '
        f'decoder; drop --save_reconstructions.')
  written = (write_reconstructions(out.reconstructions, paths,
                                   save_reconstructions)
             if reconstruct else [None] * len(paths))
  names = run.dataset.class_names
  predictions = []
  for path, row, recon in zip(paths, np.asarray(out.scores), written):
    order = np.argsort(-row, kind='stable')[:TOP_K]
    predictions.append({
        'image': path,
        'predicted': _class(int(order[0]), names),
        'top': [dict(_class(int(k), names), score=float(row[k]))
                for k in order],
        'scores': [float(s) for s in row],
        'reconstruction': recon,
    })
  return {'workdir': run.workdir, 'step': run.step,
          'dataset': run.dataset.name,
          'class_names': list(names) if names else None,
          'predictions': predictions}


def _label(entry: dict[str, Any]) -> str:
  if entry['name'] is None:
    return str(entry['class'])
  return f'{entry["name"]} (class {entry["class"]})'


def format_text(result: dict[str, Any]) -> str:
  """The human-readable report of `predict`'s result, one block per image."""
  names = result['class_names']
  lines = [f'{result["workdir"]} at step {result["step"]} '
           f'({result["dataset"]}); scores per class are the model\'s (a '
           'CapsNet\'s capsule lengths, or its logits with readout=linear):']
  for p in result['predictions']:
    top = ', '.join(f'{_label(t)} {t["score"]:.3f}' for t in p['top'])
    lines.append(f'{p["image"]}: {_label(p["predicted"])}; top-2: {top}')
    lines.append('  scores: ' + ', '.join(
        f'{names[k] if names else k} {s:.3f}'
        for k, s in enumerate(p['scores'])))
    if p['reconstruction']:
      lines.append(f'  reconstruction: {p["reconstruction"]}')
  return '\n'.join(lines) + '\n'
