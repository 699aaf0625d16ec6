r"""Quickstart: the paper's CapsNet on the 5,000 real MNIST digits in capsjax.

    python -m capsjax.main --config=configs/quickstart.py --workdir=/tmp/capsnet_quickstart

Needs no network: the digits ship with capsjax (capsjax/data/README.md).
4,000 train, 1,000 held out (100 per class, the same for every seed), 400
steps of batch 64 (6.4 epochs), a few minutes on a 2-core CPU. Its recorded
result is docs/results.md's `sample_capsnet` (experiments/plan.py).
"""
import os
import runpy


def get_config():
  config = runpy.run_path(
      os.path.join(os.path.dirname(__file__), 'mnist.py'))['get_config']()
  config.dataset.source = 'embedded'
  config.dataset.name = 'mnist_5k'
  config.batch_size = 64
  config.eval_batch_size = 256  # a multiple of 1, 2, 4, 8 ... 256 devices
  config.num_train_steps = 400
  config.log_every_steps = 25
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  return config
