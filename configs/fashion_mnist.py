r"""The MNIST CapsNet on Fashion-MNIST (same model and schedule).

    python -m capsjax.main --config=configs/fashion_mnist.py --workdir=/tmp/capsnet_fashion

tfds downloads Fashion-MNIST once. Without network, read the IDX files, e.g.
from Debian's dataset-fashion-mnist package (apt-get install
dataset-fashion-mnist), with one override:

    python -m capsjax.main --config=configs/fashion_mnist.py \
        --workdir=/tmp/capsnet_fashion --config.dataset.source=idx

The recorded 10-epoch run (a schedule made for 10 epochs, with flips) is
experiments/plan.py's `fashion_capsnet_10ep`, its result in docs/results.md.
The full 30,000 steps have not been run here.

The other models on the same data and schedule (the comparison of
experiments/plan.py), e.g. Efficient-CapsNet:

    python -m capsjax.main --config=configs/fashion_mnist.py:efficient_capsnet \
        --workdir=/tmp/effcaps_fashion --config.dataset.source=idx

`efficient_capsnet` and `matrix_capsnet_em` take the model block (and for
EM the spread loss) of configs/efficient_capsnet.py and
configs/smallnorb_em.py; everything else (batch 128, Adam 1e-3 x0.96 every
2,000 steps, shifts of up to 2 pixels) stays this config's. The baseline CNN
needs no argument: --config.model.name=baseline_cnn.
"""
import os
import runpy

_HERE = os.path.dirname(__file__)
# config argument -> the config file whose model block it takes.
MODEL_CONFIGS = {
    'efficient_capsnet': 'efficient_capsnet.py',
    'matrix_capsnet_em': 'smallnorb_em.py',
}


def _load(name):
  return runpy.run_path(os.path.join(_HERE, name))['get_config']()


def get_config(arg: str = ''):
  """Fashion-MNIST with the CapsNet, or with the model `arg` names."""
  config = _load('mnist.py')
  config.dataset.name = 'fashion_mnist'
  config.dataset.directory = '/usr/share/datasets/fashion-mnist'
  if arg in MODEL_CONFIGS:
    other = _load(MODEL_CONFIGS[arg])
    config.model = other.model
    config.loss = other.loss
    if arg == 'matrix_capsnet_em':
      # Its votes are large (tens of MB per example): train in parts, of 8
      # as the fastest measured on CPU (docs/performance.md).
      config.microbatch_size = 8
      config.eval_batch_size = 64
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}; use '
                     f'configs/fashion_mnist.py or configs/fashion_mnist.py:'
                     f'{" or :".join(MODEL_CONFIGS)}.')
  return config
