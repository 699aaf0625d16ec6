r"""The MNIST CapsNet on Fashion-MNIST (same model and schedule).

    python -m capsjax.main --config=configs/fashion_mnist.py --workdir=/tmp/capsnet_fashion

tfds downloads Fashion-MNIST once. Without network, read the IDX files, e.g.
from Debian's dataset-fashion-mnist package (apt-get install
dataset-fashion-mnist), with one override:

    python -m capsjax.main --config=configs/fashion_mnist.py \
        --workdir=/tmp/capsnet_fashion --config.dataset.source=idx

Measured from the Debian IDX files on a 2-core AMD EPYC CPU: 84.65% test
accuracy after 1 epoch (469 steps), 86.41% after 2 (resumed with
--config.num_train_steps=938), at 90-94 training images/s. The full 30,000
steps have not been run here.
"""
import os
import runpy


def get_config():
  config = runpy.run_path(
      os.path.join(os.path.dirname(__file__), 'mnist.py'))['get_config']()
  config.dataset.name = 'fashion_mnist'
  config.dataset.directory = '/usr/share/datasets/fashion-mnist'
  return config
