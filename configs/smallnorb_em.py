r"""Matrix capsules with EM routing on smallNORB (Hinton, Sabour & Frosst 2018).

    python -m capsjax.main --config=configs/smallnorb_em.py --workdir=/tmp/smallnorb_em

The paper's small network (A=B=C=D=32, 3 EM iterations, 316,394 parameters
here; the paper says 310K): 1.8% test error on smallNORB (Section 4; 1.4%
for the larger A=64, B=8, C=D=16 network). Data as in the paper: smallNORB's
96x96 images (the left camera, tfds feature 'image') downscaled to 48x48,
random 32x32 crops with random brightness and contrast for training, the
central 32x32 crop for testing, each image standardised. Spread loss with the
margin rising linearly from 0.2 to 0.9.

Not reproduced with capsjax: smallNORB cannot be downloaded on the
development machine, and this network wants a GPU (EM routing over 36
windows of 288 votes x 32 parents per example). The config runs end to end
on tfds.testing.mock_data in tests/test_matrix_capsnet_em.py. The paper gives
neither the training length, the optimiser settings nor the schedule of the
inverse temperature and the margin; the values here are choices
(documented in capsjax/routing.py) and not tuned.
"""
import os
import runpy

import ml_collections


def get_config():
  config = runpy.run_path(
      os.path.join(os.path.dirname(__file__), 'mnist.py'))['get_config']()
  config.batch_size = 32
  config.eval_batch_size = 64  # EM votes are ~21 MB per example
  config.num_train_steps = 50_000  # ~66 epochs of the 24,300 training images
  config.learning_rate = 3e-3
  config.lr_decay_steps = 2_000
  config.lr_decay_rate = 0.96
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000

  config.dataset.source = 'tfds'
  config.dataset.name = 'smallnorb'
  config.dataset.image_feature = 'image'        # 'image2': the other camera
  config.dataset.label_feature = 'label_category'
  config.dataset.read_size = 48                 # 96x96 -> 48x48 when read
  config.dataset.max_shift = 0
  config.dataset.crop_size = 32                 # random train, central test
  config.dataset.brightness_delta = 32 / 255    # as tf.image.random_brightness
  config.dataset.contrast_delta = 0.5           # contrast factor in [0.5, 1.5]
  config.dataset.standardize = True

  # The matrix capsule network's own fields replace CapsNet's.
  config.model = ml_collections.ConfigDict()
  config.model.name = 'matrix_capsnet_em'
  config.model.routing = 'em'
  config.model.routing_iters = 3
  config.model.conv1_channels = 32   # A
  config.model.conv1_kernel = 5
  config.model.conv1_stride = 2
  config.model.primary_types = 32    # B
  config.model.convcaps1_types = 32  # C
  config.model.convcaps2_types = 32  # D
  config.model.caps_kernel = 3       # K
  config.model.inverse_temperature = 0.01  # final lambda of the EM schedule

  config.loss.reconstruction_weight = 0.0  # no decoder
  config.loss.spread_margin_start = 0.2
  config.loss.spread_margin_end = 0.9
  config.loss.spread_margin_steps = 25_000  # then 0.9 to the end
  return config
