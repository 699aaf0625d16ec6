"""Predictions of a trained run on image files (`python -m capsjax.predict`).

    result = prediction.predict('/tmp/capsnet_quickstart', ['digit.png'])
    print(prediction.format_text(result))

Images are read with `data.read_image`, the function the folder source
reads its training images with, so a new image is resized, padded and
converted exactly as the training images were: a folder run uses its
`dataset.image_size`, `dataset.resize` and channel count; any other run
stretches the image to the training images' (H, W) and converts it to their
channel count (grayscale for MNIST). Works for every model in
`models.MODELS`: it reads only `outputs.scores` and `outputs.reconstructions`.
"""
import functools
import os
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from capsjax import data
from capsjax import errors
from capsjax import trained
from capsjax import workdir as workdir_lib

# Images per forward pass: bounds the memory of a long list of files.
BATCH_SIZE = 64
TOP_K = 2


def image_paths(args: Sequence[str]) -> list[str]:
  """The files to classify: each file given, and every PNG/JPEG under each
  directory given (recursively, sorted).

  Raises:
    errors.DataError: nothing given, a path that does not exist, or a
      directory without images.
  """
  if not args:
    raise errors.DataError(
        'no images given; pass image files or directories after the flags, '
        'e.g. python -m capsjax.predict --workdir=W digit.png.')
  paths = []
  for arg in args:
    if os.path.isdir(arg):
      found = []
      for root, dirs, _ in os.walk(arg):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found.extend(data.image_files(root))
      if not found:
        raise errors.DataError(
            f'{arg} holds no PNG or JPEG images; pass image files or a '
            f'directory of them.')
      paths.extend(found)
    elif os.path.isfile(arg):
      paths.append(arg)
    else:
      raise errors.DataError(f'image {arg} does not exist; pass image files '
                             f'or directories of them.')
  return paths


def image_options(run: trained.TrainedRun) -> data.ImageOptions:
  """How to read a new image for `run`'s model, as its training images were.

  Raises:
    errors.DataError: the model's images have neither 1 nor 3 channels.
  """
  height, width, channels = run.model.input_shape
  if channels not in (1, 3):
    raise errors.DataError(
        f'the model of {run.workdir} takes {channels}-channel images; predict '
        f'reads only grayscale or RGB files, so classify these with '
        f'model.apply (see capsjax.trained).')
  resize = 'stretch'
  if run.config.dataset.source == 'folder':
    resize = data.image_options(run.config.dataset).resize
  return data.ImageOptions(size=(height, width), channels=channels,
                           resize=resize)


def read_images(paths: Sequence[str],
                options: data.ImageOptions) -> np.ndarray:
  """`[N, H, W, C] float32` in [0, 1], as the input pipeline feeds them."""
  return data.to_float(np.stack([data.read_image(p, options)
                                 for p in paths]))


def run_model(run: trained.TrainedRun, images: np.ndarray, *,
              reconstruct: bool):
  """`(scores [N, K], reconstructions [N, H, W, C] or None)` of the model.

  The decoder (if any) is masked by the predicted class, as at test time.
  """
  apply = jax.jit(functools.partial(run.model.apply, train=False,
                                    reconstruct=reconstruct))
  scores, reconstructions = [], []
  for start in range(0, len(images), BATCH_SIZE):
    out = apply({'params': run.params},
                jnp.asarray(images[start:start + BATCH_SIZE]))
    scores.append(np.asarray(out.scores))
    if reconstruct:
      if out.reconstructions is None:
        raise errors.ConfigError(
            f'the {run.config.model.name!r} model of {run.workdir} has no '
            f'decoder; drop --save_reconstructions.')
      reconstructions.append(np.asarray(out.reconstructions))
  return (np.concatenate(scores),
          np.concatenate(reconstructions) if reconstruct else None)


def _check_decoder_trained(run: trained.TrainedRun) -> None:
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

  Returns:
    A JSON-ready dict: `workdir`, `step`, `dataset`, `class_names` (or
    None), and `predictions`, one per image in order: `image` (its path),
    `predicted` and `top` (`{'class', 'name', 'score'}`, best first, 2 of
    them), `scores` (`[K]`, one per class; capsule lengths for a CapsNet) and
    `reconstruction` (the PNG written, or None).

  Raises:
    errors.UserError: no workdir or checkpoint, an unreadable or missing
      image, or reconstructions asked of a model without a trained decoder.
  """
  paths = image_paths(args)
  run = trained.load(workdir)
  reconstruct = save_reconstructions is not None
  if reconstruct:
    _check_decoder_trained(run)
  images = read_images(paths, image_options(run))
  scores, reconstructions = run_model(run, images, reconstruct=reconstruct)
  written = (write_reconstructions(reconstructions, paths,
                                   save_reconstructions)
             if reconstruct else [None] * len(paths))
  names = run.dataset.class_names
  predictions = []
  for path, row, recon in zip(paths, scores, written):
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
           f'({result["dataset"]}); scores per class are the model\'s '
           f'(capsule lengths for a CapsNet):']
  for p in result['predictions']:
    top = ', '.join(f'{_label(t)} {t["score"]:.3f}' for t in p['top'])
    lines.append(f'{p["image"]}: {_label(p["predicted"])}; top-2: {top}')
    lines.append('  scores: ' + ', '.join(
        f'{names[k] if names else k} {s:.3f}'
        for k, s in enumerate(p['scores'])))
    if p['reconstruction']:
      lines.append(f'  reconstruction: {p["reconstruction"]}')
  return '\n'.join(lines) + '\n'
