r"""Test accuracy per epoch of a training run, as a table and a figure.

    python experiments/learning_curve.py --workdir=/tmp/capsnet_fashion \
        --out=docs/gallery/fashion_mnist_curve.png [--reference=capsnet_keras_fashion]

Reads WORKDIR/metrics.jsonl (the test evaluations) and WORKDIR/config.json
(the batch size; the training split's size comes from loading the dataset the
run used), prints a Markdown table of test accuracy per epoch and writes the
figure. With --reference the published curve of another implementation is
drawn beside it (see `REFERENCES`).
"""
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
import matplotlib
matplotlib.use('Agg')  # Files only; no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from capsjax import cli
from capsjax import data
from capsjax import errors
from capsjax import metric_writers
from capsjax import runs
from capsjax import workdir as workdir_lib

FLAGS = flags.FLAGS

# Published curves, as (epoch, test accuracy) points, with where they come from.
REFERENCES = {
    'capsnet_keras_fashion': {
        'label': 'CapsNet-Keras (batch 100, shifts + flips)',
        # XifengGuo/CapsNet-Fashion-MNIST: result/log.png (val_out_caps_acc),
        # read off the plot to about +-0.5 points; its README states the
        # final 93.62% after 100 epochs. Trained with +-2 px shifts and
        # horizontal flips, Adam 1e-3 decayed x0.95 every epoch.
        'points': ((1, 0.82), (2, 0.855), (5, 0.88), (10, 0.90),
                   (20, 0.915), (50, 0.93), (100, 0.9362)),
    },
}


def epoch_accuracies(workdir: str) -> list[dict]:
  """`[{'epoch', 'step', 'test_accuracy'}]` of every test evaluation.

  Raises:
    errors.ConfigError: the workdir has no config.json or no test metrics.
  """
  config = runs.read_config(workdir)
  train_examples = data.load(config.dataset).train.num_examples
  steps_per_epoch = train_examples // config.batch_size
  rows = [{'epoch': r['step'] / steps_per_epoch, 'step': r['step'],
           'test_accuracy': r['accuracy']}
          for r in metric_writers.read_split(workdir, 'test')]
  if not rows:
    raise errors.ConfigError(
        f'{workdir_lib.path(workdir, workdir_lib.METRICS)} has no test '
        f'evaluations yet; train with python -m capsjax.main '
        f'--workdir={workdir} first.')
  return rows


def markdown(rows: Sequence[dict]) -> str:
  lines = ['| Epoch | Step | Test accuracy (%) |', '| ---: | ---: | ---: |']
  lines += [f'| {r["epoch"]:g} | {r["step"]} | {100 * r["test_accuracy"]:.2f} |'
            for r in rows]
  return '\n'.join(lines) + '\n'


def plot(rows: Sequence[dict], path: str, label: str,
         reference: Optional[str] = None) -> None:
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
  ax.plot([r['epoch'] for r in rows],
          [100 * r['test_accuracy'] for r in rows], marker='o', label=label)
  if reference:
    ref = REFERENCES[reference]
    epochs, accuracies = zip(*ref['points'])
    last = max(r['epoch'] for r in rows)
    shown = [(e, a) for e, a in zip(epochs, accuracies) if e <= 2 * last]
    ax.plot(*zip(*[(e, 100 * a) for e, a in shown]), marker='s',
            linestyle='--', label=ref['label'])
  ax.set_xlabel('epoch')
  ax.set_ylabel('test accuracy (%)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  workdir_lib.write_figure(path, fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  with cli.user_errors_exit():
    if FLAGS.reference and FLAGS.reference not in REFERENCES:
      raise errors.ConfigError(
          f'unknown --reference={FLAGS.reference}; use one of '
          f'{", ".join(REFERENCES)}.')
    rows = epoch_accuracies(os.path.abspath(FLAGS.workdir))
    print(markdown(rows), end='')
    if FLAGS.out:
      plot(rows, FLAGS.out, FLAGS.label, FLAGS.reference)


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the command line's flags (only when run as a script)."""
  flags.DEFINE_string('workdir', None, 'Workdir of a training run.',
                      flag_values=flag_values)
  flags.DEFINE_string('out', None, 'PNG to write the curve to.',
                      flag_values=flag_values)
  flags.DEFINE_string('label', 'capsjax', 'Legend label of the run.',
                      flag_values=flag_values)
  flags.DEFINE_string('reference', None, 'A published curve to draw beside '
                      f'it: one of {", ".join(REFERENCES)}.',
                      flag_values=flag_values)
  flags.mark_flags_as_required(['workdir'], flag_values)


if __name__ == '__main__':
  define_flags()
  app.run(main)
