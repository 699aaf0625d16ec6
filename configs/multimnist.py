r"""MultiMNIST: two overlapping digits (Sabour, Frosst & Hinton, 2017, Section 6).

    python -m capsjax.main --config=configs/multimnist.py --workdir=/tmp/capsnet_multimnist
    python -m capsjax.main --config=configs/multimnist.py --workdir=/tmp/baseline_multimnist \
        --config.model.name=baseline_cnn

Each image overlays two MNIST digits of different classes, each padded to
36x36 and shifted by up to 4 pixels in each direction, merged by a pixelwise
sum clipped to 255 (the paper's official code). Training pairs are drawn per
step from (seed, step); the test set is `multimnist_test_size` fixed overlays
built from the test split (seed `data.multimnist.TEST_SEED`). CapsNet is trained
with both labels in the margin loss and reconstructs each digit from its own
masked capsule (the sum of both reconstruction losses); at test time from the
two longest capsules. An image counts as correct when the two longest
capsules (the two highest logits for the baseline) are its two digits;
`test_error_pct` in summary.json is that error.

The paper reports 5.2% error for CapsNet (3 routing iterations, with
reconstruction) and 8.1% for its baseline, on 1,000 overlays per test digit,
after training on 60M overlays (1,000 per training digit). The baseline here
is the official code's MultiMNIST baseline (research/capsules/models/
conv_model.py): two 5x5 convolutions of 512 and 256 channels, each followed by
2x2 max pooling, one fully connected layer of 1,024 and a sigmoid per class
(cross-entropy with both digits as targets); with SAME padding on 36x36 images
it has 24,535,306 parameters. Not reproduced with capsjax.

Offline: --config.dataset.source=embedded (the 5k sample) or source=idx.
"""
import os
import runpy


def get_config():
  config = runpy.run_path(
      os.path.join(os.path.dirname(__file__), 'mnist.py'))['get_config']()
  config.dataset.multimnist = True
  config.dataset.max_shift = 0  # each digit is shifted by multimnist_shift
  config.model.num_targets = 2
  # The MultiMNIST baseline (only read with --config.model.name=baseline_cnn).
  config.model.cnn_channels = (512, 256)
  config.model.cnn_pool = True
  config.model.cnn_hidden = (1024,)
  config.model.cnn_dropout = 0.0
  return config
