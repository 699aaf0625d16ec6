"""Training learns: a short real run of the trainer on real digits ends far
above chance on digits it never saw.

Every other end-to-end test trains a few steps and accepts any accuracy, so
wiring that stops learning (labels separated from their images, a learning
rate or gradients that never reach the parameters, a loss that pushes the
wrong way) would pass them. Here a small CapsNet (the paper's layers and
routing, few channels; the full margin + reconstruction objective) trains
100 steps of batch 32 on the embedded MNIST sample (4,000 train, 1,000 held
out, 100 per class) and must classify at least 80% of the held-out digits
(chance: 10%).
"""
import json

import pytest

from capsjax import train
from capsjax import workdir as workdir_lib
from conftest import load_config

pytestmark = pytest.mark.slow  # a short real training run

STEPS = 100
LEARNS = {
    'model.conv1_channels': 16,
    'model.primary_types': 4,
    'model.primary_dim': 8,
    'model.digit_dim': 8,
    'model.decoder_hidden': (16, 32),
    'batch_size': 32,
    'eval_batch_size': 500,
    'num_train_steps': STEPS,
    'learning_rate': 3e-3,
    'log_every_steps': 25,
    'eval_every_steps': STEPS,
    'checkpoint_every_steps': STEPS,
}


def test_a_short_run_classifies_held_out_digits_well_above_chance(tmp_path):
  config = load_config('quickstart', **LEARNS)
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['dataset'] == 'embedded:mnist_5k'
  assert summary['steps'] == STEPS
  assert summary['test_examples'] == 1000
  assert summary['test_accuracy'] >= 0.8, summary
  with open(workdir_lib.path(str(tmp_path), workdir_lib.METRICS)) as f:
    records = [json.loads(line) for line in f]
  train_losses = [r['loss'] for r in records if r['split'] == 'train']
  assert len(train_losses) == STEPS // 25
  # The last 25 steps' mean loss is well below the first 25 steps'.
  assert train_losses[-1] < 0.5 * train_losses[0], train_losses
