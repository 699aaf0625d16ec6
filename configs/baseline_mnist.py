r"""The paper's baseline CNN on MNIST (Sabour, Frosst & Hinton, 2017, Section 5).

    python -m capsjax.main --config=configs/baseline_mnist.py --workdir=/tmp/baseline_mnist

Three 5x5 stride-1 ReLU convolutions of 256, 256 and 128 channels (SAME
padding, no pooling), fully connected ReLU layers of 328 and 192 units,
dropout 0.5 and a 10-way softmax with cross-entropy: 35,445,522 parameters,
the paper's 35.4M. Everything else is configs/mnist.py's: the same +-2 pixel
shifts, Adam 1e-3 decayed x0.96 every 2,000 steps, batch 128, checkpoints and
summary. The paper reports 0.39% test error for this baseline (Table 1). Not
reproduced with capsjax: it needs about 8 GFLOP per training image, hours on
a CPU.

The paper does not give the dropout rate; 0.5 is the common choice.
"""
import os
import runpy


def get_config():
  config = runpy.run_path(
      os.path.join(os.path.dirname(__file__), 'mnist.py'))['get_config']()
  config.model.name = 'baseline_cnn'
  return config
