"""Image files -> `[H, W, C] uint8` arrays: one reader for training and
predictions.

The folder source reads every training image with `read_image`, and
`capsjax.runs.predict` reads new images with it, so a model sees new images exactly as
it saw its training images. Pillow (the `train` extra) is imported only when
an image is read.
"""
import dataclasses
import os
from typing import Sequence

import numpy as np

from capsjax import checks
from capsjax import errors

# Files read (case-insensitive); anything else, and hidden files, are skipped.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

RESIZE_MODES = ('stretch', 'pad')
CHANNEL_CHOICES = (0, 1, 3)

# Pillow modes of one channel (plus alpha for 'LA'); every other mode is
# read as RGB (palettes, CMYK, YCbCr; alpha is dropped).
_GRAY_MODES = ('1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16B', 'I;16L', 'F')


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """How an image file becomes a `[H, W, C] uint8` array.

  Attributes:
    size: `(H, W)` of the result.
    channels: 1 (grayscale), 3 (RGB), or 0 (the file's own: 1 for grayscale
      files, 3 for colour ones).
    resize: 'stretch' (resize to `size`, ignoring the aspect ratio) or 'pad'
      (shrink or enlarge to fit inside `size` keeping the aspect ratio, then
      centre on black).
  """
  size: tuple[int, int]
  channels: int
  resize: str


def image_options(dataset_config) -> ImageOptions:
  """The folder source's `ImageOptions` from `config.dataset`, checked.

  Raises:
    errors.ConfigError: naming the first bad field and a value that works.
  """
  raw_size = checks.field(dataset_config, 'image_size')
  try:
    size = tuple(raw_size)
  except TypeError:
    size = (raw_size,)
  if len(size) != 2 or not all(checks.is_int(s) and s >= 1 for s in size):
    raise errors.ConfigError(
        f'config.dataset.image_size must be two ints >= 1 (H, W), got '
        f'{raw_size!r}; set --config.dataset.image_size=\'(28, 28)\'.')
  channels = checks.field(dataset_config, 'channels')
  if not checks.is_int(channels) or channels not in CHANNEL_CHOICES:
    raise errors.ConfigError(
        f'config.dataset.channels must be 1 (grayscale), 3 (RGB) or 0 (keep '
        f'the files\' own), got {channels!r}; set --config.dataset.channels=0.')
  resize = checks.field(dataset_config, 'resize')
  if resize not in RESIZE_MODES:
    raise errors.ConfigError(
        f'config.dataset.resize must be one of {", ".join(RESIZE_MODES)}, got '
        f'{resize!r}; set --config.dataset.resize=stretch.')
  return ImageOptions(size=tuple(int(s) for s in size), channels=int(channels),
                      resize=resize)


def _import_pil():
  try:
    import PIL.Image  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.DataError(
        'dataset.source=\'folder\' reads images with Pillow, which is not '
        'installed; pip install "capsjax[train]" (or pip install pillow).'
    ) from None
  return PIL.Image


def _file_channels(mode: str) -> int:
  return 1 if mode in _GRAY_MODES else 3


def read_image(path: str, options: ImageOptions) -> np.ndarray:
  """One PNG or JPEG file as `[H, W, C] uint8`, converted as `options` say.

  The folder source reads every image with this function, and `predict` its
  inputs, so a model sees new images exactly as it saw its training images.

  Raises:
    errors.DataError: naming the file, if it cannot be read as an image.
  """
  pil_image = _import_pil()
  try:
    with pil_image.open(path) as image:
      image.load()
      if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        # 16-bit and float grays: Pillow's conversion to 'L' clips at 255.
        array = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith('I;16') else max(
            float(array.max()), 1.0)
        image = pil_image.fromarray(
            np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8))
      channels = options.channels or _file_channels(image.mode)
      image = image.convert('L' if channels == 1 else 'RGB')
      image = _fit(pil_image, image, options)
  except (OSError, ValueError, SyntaxError,
          pil_image.DecompressionBombError) as e:
    # UnidentifiedImageError and truncated files are OSErrors.
    raise errors.DataError(
        f'cannot read image {path} '
        f'({errors.first_line(e) or type(e).__name__}); '
        f'delete or replace it (PNG or JPEG).') from None
  array = np.asarray(image, np.uint8)
  return array.reshape(*array.shape[:2], channels)


def _fit(pil_image, image, options: ImageOptions):
  """`image` resized (stretched) or letterboxed to `options.size` (H, W)."""
  height, width = options.size
  if image.size == (width, height):
    return image
  resample = pil_image.Resampling.BILINEAR
  if options.resize == 'stretch':
    return image.resize((width, height), resample)
  scale = min(width / image.width, height / image.height)
  inner = (max(1, round(image.width * scale)),
           max(1, round(image.height * scale)))
  canvas = pil_image.new(image.mode, (width, height), 0)
  canvas.paste(image.resize(inner, resample),
               ((width - inner[0]) // 2, (height - inner[1]) // 2))
  return canvas


def image_files(directory: str) -> list[str]:
  """The PNG/JPEG files directly in `directory`, sorted by name."""
  return sorted(
      os.path.join(directory, name) for name in os.listdir(directory)
      if not name.startswith('.')
      and name.lower().endswith(IMAGE_EXTENSIONS)
      and os.path.isfile(os.path.join(directory, name)))


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
        found.extend(image_files(root))
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
