"""Data: sources -> an in-memory `Dataset` -> numpy batches.

    dataset = data.load(config.dataset)
    preprocessing = data.Preprocessing.from_config(config.dataset, dataset)
    batches = data.train_batches(dataset.train, batch_size=128, seed=0,
                                 preprocessing=preprocessing)

The modules, each importing only those above it:

  dataset     Split, Dataset: the in-memory types
  augment     pure image transforms: shift, pad, overlay, crop, flip, jitter,
              standardize, and uint8 -> float32
  images      image files -> arrays (the folder source and predict)
  multimnist  MultiMNIST overlays and the canvas, composed on any source
  affine      affNIST-like test sets and affNIST's .mat files
  sources     SOURCES (tfds, idx, embedded, folder) and load
  batching    Preprocessing; train batches as a pure function of (seed,
              step), eval batches, prefetch
"""
from capsjax.data.augment import to_float
from capsjax.data.batching import eval_batches
from capsjax.data.batching import eval_images
from capsjax.data.batching import Preprocessing
from capsjax.data.batching import train_batch
from capsjax.data.batching import train_batches
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import describe_array
from capsjax.data.dataset import Split
from capsjax.data.images import image_files
from capsjax.data.images import image_options
from capsjax.data.images import image_paths
from capsjax.data.images import ImageOptions
from capsjax.data.images import read_image
from capsjax.data.sources import load
from capsjax.data.sources import SOURCES

__all__ = [
    'Dataset',
    'ImageOptions',
    'Preprocessing',
    'SOURCES',
    'Split',
    'describe_array',
    'eval_batches',
    'eval_images',
    'image_files',
    'image_options',
    'image_paths',
    'load',
    'read_image',
    'to_float',
    'train_batch',
    'train_batches',
]
