r"""Figures of a trained capsule network, from a workdir's latest checkpoint.

Any model of `capsjax.models` with class capsules and a decoder (CapsNet with
any vector routing, Efficient-CapsNet).

    python experiments/visualize.py --workdir=/tmp/capsnet_quickstart --out=/tmp/figures

Writes five PNGs to --out (default WORKDIR/figures), all on test images, with
the decoder masked by the PREDICTED class as at test time:

  reconstructions.png          one test image per class above its
                               reconstruction
  dimension_perturbations.png  the paper's Figure 4: each DigitCaps dimension
                               of the predicted class's capsule shifted by
                               -0.25 .. 0.25 in steps of 0.05, then decoded
  couplings.png                one example's routing coefficients at every
                               routing iteration, for whichever routing the
                               run used (self-attention routing: its one
                               pass)
  capsule_lengths.png          the class capsules' lengths for a few examples
  confusion_matrix.png         true against predicted class on the test split

A run trained without the reconstruction loss has an untrained decoder: its
first two figures are skipped. For a matrix capsule network with EM routing
(configs/smallnorb_em.py) the figures are em_assignments.png (the class
layer's assignments R per iteration), em_activations.png (class
activations) and confusion_matrix.png; see `visualize_em`.

A MultiMNIST run (configs/multimnist.py) gets one figure instead, like the
paper's Figure 5:

  multimnist_reconstructions.png  overlaid test digits above the two digits
                                  reconstructed from the two longest
                                  capsules, one in red and one in green
"""
import io
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use('Agg')  # Files only; no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import PIL.Image

from capsjax import cli
from capsjax import data
from capsjax import errors
from capsjax import layers
from capsjax import models
from capsjax import runs
from capsjax import workdir as workdir_lib

FLAGS = flags.FLAGS

# Figure 4 of the paper: each dimension shifted by these amounts.
DELTAS = np.round(np.arange(-5, 6) * 0.05, 2)  # -0.25, -0.2, ..., 0.25
NUM_FIGURE4_EXAMPLES = 3
NUM_LENGTH_EXAMPLES = 5
MAX_CLASSES_SHOWN = 10

DPI = 100
PNG_COLORS = 128
GRAY_LEVELS = 24
# Figure sizes in inches; at DPI 100 the PNGs are exactly 100x these pixels.
SIZES = {
    'reconstructions': (6, 1.8),
    'dimension_perturbations': (10, 5.5),
    'couplings': (9, 4.5),
    'capsule_lengths': (10, 4),
    'confusion_matrix': (5.5, 5),
}
MULTIMNIST_SIZE = (8, 2.6)
NUM_MULTIMNIST_EXAMPLES = 8


# --------------------------------------------------------------- the model --


def forward(run: runs.Run, images: np.ndarray, *, reconstruct: bool = True,
            return_couplings: bool = False) -> models.CapsNetOutput:
  """The model on uint8 `images: [B, H, W, C]` as the splits hold them
  (`runs.Run.apply`: prepared as in evaluation, decoder masked by
  prediction)."""
  return run.apply(images, reconstruct=reconstruct,
                   return_couplings=return_couplings)


def decode(run: runs.Run, capsules: np.ndarray,
           select: np.ndarray) -> np.ndarray:
  """The trained decoder: `capsules [B, K, D]`, `select [B]` -> `[B, H, W, C]`.

  The same `layers.Decoder` that `CapsNet` builds under the name 'decoder',
  applied on its own to capsules of our choosing.
  """
  decoder = layers.Decoder(tuple(run.model.input_shape),
                           tuple(run.model.decoder_hidden))
  apply = jax.jit(decoder.apply)
  return np.asarray(apply({'params': run.params['decoder']},
                          jnp.asarray(capsules), jnp.asarray(select)))


def scores_of_test_split(run: runs.Run) -> np.ndarray:
  """The class scores (capsule lengths) of every test example, `[N, K]`."""
  return run.apply(run.dataset.test.images).scores


def first_of_each_class(labels: np.ndarray, limit: int) -> np.ndarray:
  """Index of the first example of each class, in class order, at most `limit`."""
  classes = np.unique(labels)[:limit]
  return np.array([np.flatnonzero(labels == c)[0] for c in classes])


def perturbation_batch(capsules: np.ndarray, select: int,
                       deltas: Sequence[float] = DELTAS) -> np.ndarray:
  """Figure 4's decoder inputs for one example.

  Args:
    capsules: `[K, D]` the example's DigitCaps.
    select: the class whose capsule is perturbed (the decoder's mask).
    deltas: `[n]` amounts added to one dimension at a time.

  Returns:
    `[D, n, K, D]`: entry `[d, k]` is `capsules` with `deltas[k]` added to
    dimension d of capsule `select`, everything else unchanged.
  """
  capsules = np.asarray(capsules, np.float32)
  num_dims = capsules.shape[1]
  deltas = np.asarray(deltas, np.float32)
  batch = np.broadcast_to(capsules,
                          (num_dims, len(deltas), *capsules.shape)).copy()
  for d in range(num_dims):
    batch[d, :, select, d] += deltas
  return batch


def dimension_grid(run: runs.Run, capsules: np.ndarray, select: int,
                   deltas: Sequence[float] = DELTAS) -> np.ndarray:
  """Decoded `perturbation_batch`: `[D, n, H, W, C]` images."""
  batch = perturbation_batch(capsules, select, deltas)
  num_dims, num_deltas = batch.shape[:2]
  flat = batch.reshape(-1, *batch.shape[2:])
  images = decode(run, flat, np.full(len(flat), select, np.int32))
  return images.reshape(num_dims, num_deltas, *images.shape[1:])


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """`[K, K]` counts: row = true class, column = predicted class."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predicted), 1)
  return counts


# ----------------------------------------------------------------- figures --


def mosaic(images: np.ndarray, pad: int = 1) -> np.ndarray:
  """`[R, C, H, W, ch]` -> one `[R*(H+pad)+pad, C*(W+pad)+pad(, 3)]` image."""
  rows, cols, h, w, ch = images.shape
  out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, ch),
                np.float32)
  for r in range(rows):
    for c in range(cols):
      y, x = pad + r * (h + pad), pad + c * (w + pad)
      out[y:y + h, x:x + w] = images[r, c]
  return out[..., 0] if ch == 1 else out


def _show(ax, image):
  ax.imshow(np.clip(image, 0, 1), cmap='gray', vmin=0, vmax=1,
            interpolation='nearest')


def _figure(name: str):
  return plt.figure(figsize=SIZES[name], dpi=DPI)


def _save(fig, path: str, gray_levels: Optional[int] = None) -> None:
  """Writes `fig` as a small PNG.

  Args:
    fig: the figure; closed here.
    path: the PNG to write.
    gray_levels: for grayscale figures: store this many evenly spaced grays.
      Else a palette of `PNG_COLORS` colours. Either is a third to a half of
      the bytes of matplotlib's RGBA PNG.
  """
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=DPI)
  plt.close(fig)
  image = PIL.Image.open(buffer)
  if gray_levels:
    step = 255 / (gray_levels - 1)
    image = image.convert('L').point(lambda v: round(round(v / step) * step))
  else:
    image = image.convert('RGB').quantize(colors=PNG_COLORS)
  workdir_lib.write_atomic(
      path, lambda tmp: image.save(tmp, format='PNG', optimize=True))


def plot_reconstructions(images, reconstructions, labels, predicted,
                         path: str) -> None:
  """Inputs (top row) above their reconstructions (bottom row)."""
  fig = _figure('reconstructions')
  ax = fig.add_axes((0.09, 0.02, 0.9, 0.84))
  _show(ax, mosaic(np.stack([images, reconstructions])))
  h = images.shape[1] + 1
  ax.set_yticks([h / 2, 1.5 * h], ['input', 'recon.'], fontsize=8)
  ax.set_xticks([])
  fig.suptitle(f'Test digits (labels {"".join(map(str, labels))}) and their '
               f'reconstructions from the predicted capsule '
               f'({"".join(map(str, predicted))})', fontsize=8)
  _save(fig, path, gray_levels=GRAY_LEVELS)


def plot_dimension_grids(grids: Sequence[np.ndarray], titles: Sequence[str],
                         deltas: Sequence[float], path: str) -> None:
  """Figure 4: one panel per example, rows = dimensions, columns = deltas."""
  fig = _figure('dimension_perturbations')
  axes = fig.subplots(1, len(grids), squeeze=False)[0]
  for ax, grid, title in zip(axes, grids, titles):
    _show(ax, mosaic(grid))
    num_dims, num_deltas, h, w = grid.shape[:4]
    ax.set_yticks([(d + 0.5) * (h + 1) for d in range(num_dims)],
                  [str(d) for d in range(num_dims)], fontsize=6)
    ends = [0, num_deltas // 2, num_deltas - 1]
    ax.set_xticks([(k + 0.5) * (w + 1) for k in ends],
                  [f'{deltas[k]:+.2f}' for k in ends], fontsize=7)
    ax.set_ylabel('capsule dimension', fontsize=7)
    ax.set_title(title, fontsize=8)
  fig.suptitle('Each DigitCaps dimension shifted by -0.25 .. +0.25 (step '
               '0.05) and decoded (the paper\'s Figure 4)', fontsize=9)
  fig.subplots_adjust(left=0.04, right=0.99, bottom=0.06, top=0.88, wspace=0.15)
  _save(fig, path, gray_levels=GRAY_LEVELS)


def plot_couplings(image: np.ndarray, couplings: np.ndarray, winner: int,
                   grid: Sequence[int], title: str, path: str,
                   inputs_name: str = 'primary capsules',
                   coupling_name: str = 'coupling') -> None:
  """One example's coupling coefficients to its winning class, per iteration.

  Top: the image, then for each iteration the coupling to the winner on the
  PrimaryCaps grid (averaged over the capsule types at each position),
  coloured around the uniform 1/K. Bottom: every primary capsule's coupling
  to the winner, sorted, one line per iteration.

  Args:
    image: `[H, W, C]` the example.
    couplings: `[r, num_primary, K]` its couplings at each iteration.
    winner: the predicted class.
    grid: `(H', W')` of the PrimaryCaps; primary capsule `(y * W' + x) *
      types + t` sits at `(y, x)`.
    title: the figure's title.
    path: the PNG to write.
    inputs_name: what the input capsules are, for the axis label.
    coupling_name: what the coefficients are, for the axis label.
  """
  num_iters, num_primary, num_classes = couplings.shape
  to_winner = couplings[:, :, winner]  # [r, num_primary]
  maps = to_winner.reshape(num_iters, *grid, -1).mean(-1)  # [r, H', W']
  uniform = 1.0 / num_classes
  spread = max(float(np.abs(maps - uniform).max()), 1e-3)
  fig = _figure('couplings')
  spec = fig.add_gridspec(2, num_iters + 2, height_ratios=[1, 1],
                          width_ratios=[1] * (num_iters + 1) + [0.08])
  ax = fig.add_subplot(spec[0, 0])
  _show(ax, image[..., 0] if image.shape[-1] == 1 else image)
  ax.set_title(f'input (class {winner} wins)', fontsize=8)
  ax.set_axis_off()
  for t in range(num_iters):
    ax = fig.add_subplot(spec[0, t + 1])
    shown = ax.imshow(maps[t], cmap='RdBu_r', vmin=uniform - spread,
                      vmax=uniform + spread, interpolation='nearest')
    ax.set_title(f'iteration {t + 1}: mean {to_winner[t].mean():.3f}',
                 fontsize=8)
    ax.set_axis_off()
  colorbar = fig.colorbar(shown, cax=fig.add_subplot(spec[0, -1]))
  colorbar.ax.tick_params(labelsize=6)
  ax = fig.add_subplot(spec[1, :-1])
  for t in range(num_iters):
    ax.plot(np.sort(to_winner[t])[::-1], label=f'iteration {t + 1}')
  ax.axhline(uniform, color='black', lw=0.6, ls=':', label=f'1/{num_classes}')
  ax.set_xlim(0, num_primary - 1)
  ax.set_xlabel(f'{inputs_name} ({num_primary}), sorted', fontsize=7)
  ax.set_ylabel(f'{coupling_name} to class {winner}', fontsize=7)
  ax.tick_params(labelsize=7)
  ax.legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.subplots_adjust(left=0.08, right=0.95, bottom=0.1, top=0.86,
                      hspace=0.35, wspace=0.25)
  _save(fig, path)


def plot_capsule_lengths(images, lengths, labels, predicted,
                         path: str, score_name: str = 'capsule length') -> None:
  """Each example above the lengths of its class capsules."""
  num_examples, num_classes = lengths.shape
  fig = _figure('capsule_lengths')
  axes = fig.subplots(2, num_examples, squeeze=False,
                      gridspec_kw={'height_ratios': [1, 1.6]})
  for i in range(num_examples):
    image = images[i, ..., 0] if images.shape[-1] == 1 else images[i]
    _show(axes[0, i], image)
    axes[0, i].set_axis_off()
    axes[0, i].set_title(f'label {labels[i]}, predicted {predicted[i]}',
                         fontsize=8,
                         color='black' if labels[i] == predicted[i] else 'red')
    colors = ['tab:red' if k == predicted[i] else 'tab:gray'
              for k in range(num_classes)]
    axes[1, i].bar(range(num_classes), lengths[i], color=colors)
    axes[1, i].axhline(0.5, color='black', lw=0.5, ls=':')
    axes[1, i].set_ylim(0, 1)
    axes[1, i].set_xticks(range(num_classes))
    axes[1, i].tick_params(labelsize=6)
    axes[1, i].set_xlabel('class', fontsize=7)
  axes[1, 0].set_ylabel(score_name, fontsize=7)
  fig.tight_layout()
  _save(fig, path)


def plot_confusion_matrix(counts: np.ndarray, title: str, path: str) -> None:
  fig = _figure('confusion_matrix')
  ax = fig.add_subplot()
  num_classes = len(counts)
  ax.imshow(np.log1p(counts), cmap='Blues')
  if num_classes <= 20:
    for (i, j), n in np.ndenumerate(counts):
      if n:
        ax.text(j, i, str(n), ha='center', va='center', fontsize=6,
                color='white' if i == j else 'black')
  ticks = range(num_classes) if num_classes <= 20 else []
  ax.set_xticks(ticks)
  ax.set_yticks(ticks)
  ax.tick_params(labelsize=7)
  ax.set_xlabel('predicted class', fontsize=8)
  ax.set_ylabel('true class', fontsize=8)
  ax.set_title(title, fontsize=8)
  fig.tight_layout()
  _save(fig, path)


# --------------------------------------------------------------------- all --


def two_colours(first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """`[N, H, W, 1]` pairs -> `[N, H, W, 3]`: first in red, second in green."""
  return np.concatenate([first, second, np.zeros_like(first)], -1)


def plot_multimnist(images, reconstructions, labels, decoded,
                    path: str) -> None:
  """The paper's Figure 5: inputs above their two-colour reconstructions.

  Args:
    images: `[N, H, W, 1]` overlays in [0, 1].
    reconstructions: `[N, 2, H, W, 1]` from the two longest capsules.
    labels: `[N, 2]` true classes.
    decoded: `[N, 2]` classes of the two longest capsules (red, green).
    path: the PNG to write.
  """
  count = len(images)
  fig = plt.figure(figsize=MULTIMNIST_SIZE, dpi=DPI)
  for i in range(count):
    for row, picture in enumerate((
        np.repeat(images[i], 3, -1),
        two_colours(reconstructions[i, 0], reconstructions[i, 1]))):
      ax = fig.add_subplot(2, count, row * count + i + 1)
      ax.imshow(np.clip(picture, 0, 1), interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(f'L:({labels[i, 0]},{labels[i, 1]})', fontsize=8)
      else:
        ax.set_xlabel(f'R:({decoded[i, 0]},{decoded[i, 1]})', fontsize=8)
  fig.suptitle('MultiMNIST test overlays (top) and the digits reconstructed '
               'from the two longest capsules (red, green); L: labels, '
               'R: reconstructed classes', fontsize=8)
  _save(fig, path)


def visualize_multimnist(run: runs.Run, out: str) -> dict[str, str]:
  """Figure 5 for a MultiMNIST CapsNet run; returns {name: path}."""
  test = run.dataset.test
  shown = first_of_each_class(test.labels[:, 0], NUM_MULTIMNIST_EXAMPLES)
  images = data.to_float(test.images[shown])
  outputs = forward(run, test.images[shown], reconstruct=True)
  path = os.path.join(out, 'multimnist_reconstructions.png')
  plot_multimnist(images, np.asarray(outputs.reconstructions),
                  test.labels[shown], np.asarray(outputs.decoded), path)
  logging.info('Wrote %s.', path)
  return {'multimnist_reconstructions': path}


def _confusion_matrix_and_log(run: runs.Run, predicted: np.ndarray,
                              paths: dict[str, str]) -> dict[str, str]:
  """Draws the test split's confusion matrix, logs every figure, returns paths."""
  test = run.dataset.test
  counts = confusion_matrix(test.labels, predicted, run.dataset.num_classes)
  error = 100.0 * (1.0 - np.trace(counts) / counts.sum())
  plot_confusion_matrix(
      counts, f'{run.dataset.name} test split, step {run.step}: '
      f'{error:.2f}% error ({counts.sum()} examples)',
      paths['confusion_matrix'])
  for path in paths.values():
    logging.info('Wrote %s.', path)
  return paths


def visualize(workdir: str, out: str | None = None) -> dict[str, str]:
  """Writes the figures of `workdir`'s latest checkpoint to `out`.

  Returns:
    Figure name -> path of each PNG written.

  Raises:
    errors.ConfigError: the workdir has no config.json or no checkpoint, or
      `out` cannot be written.
  """
  run = runs.load(workdir)
  figures = models.spec(run.config.model).figures
  if figures is None:
    drawn = [name for name, entry in models.MODELS.items() if entry.figures]
    raise errors.ConfigError(
        f'{run.workdir} trained model {run.config.model.name!r}; these '
        f'figures are of capsule networks, pass the workdir of a '
        f'{", ".join(drawn[:-1])} or {drawn[-1]} run.')
  out = os.path.abspath(out or os.path.join(run.workdir, 'figures'))
  try:
    os.makedirs(out, exist_ok=True)
  except OSError as e:
    raise errors.ConfigError(f'cannot create {out} ({e.strerror}); pass a '
                            f'writable --out.') from None
  if figures == 'em':
    return visualize_em(run, out)
  if getattr(run.model, 'num_targets', 1) == 2:
    return visualize_multimnist(run, out)
  test = run.dataset.test
  paths = {name: os.path.join(out, f'{name}.png') for name in SIZES}
  chosen = first_of_each_class(test.labels, MAX_CLASSES_SHOWN)
  images = data.to_float(test.images[chosen])
  reconstruct = run.config.loss.reconstruction_weight > 0
  outputs = forward(run, test.images[chosen], reconstruct=reconstruct,
                    return_couplings=True)
  predicted = np.argmax(outputs.scores, -1)
  labels = test.labels[chosen]
  logging.info('Step %d of %s; figures for test examples %s.', run.step,
               run.workdir, chosen.tolist())

  if reconstruct:
    plot_reconstructions(images, outputs.reconstructions, labels, predicted,
                         paths['reconstructions'])
    picks = range(min(NUM_FIGURE4_EXAMPLES, len(chosen)))
    grids = [dimension_grid(run, outputs.capsules[i], int(predicted[i]))
             for i in picks]
    plot_dimension_grids(
        grids, [f'label {labels[i]}, predicted {predicted[i]}' for i in picks],
        DELTAS, paths['dimension_perturbations'])
  else:
    logging.info('Reconstruction was off in this run (loss.'
                 'reconstruction_weight = 0), so its decoder is untrained: '
                 'skipping reconstructions.png and '
                 'dimension_perturbations.png.')
    del paths['reconstructions'], paths['dimension_perturbations']

  num_iters = outputs.couplings.shape[1]
  plot_couplings(
      images[0], outputs.couplings[0], int(predicted[0]),
      run.model.capsule_grid(),
      f'{run.model.routing} routing: couplings of test example {chosen[0]} to '
      f'its winning class ({num_iters} iteration(s))', paths['couplings'])

  lengths = scores_of_test_split(run)
  all_predicted = np.argmax(lengths, -1)
  wrong = np.flatnonzero(all_predicted != test.labels)
  # A few examples, one per class, and the first mistake if there is one.
  shown = np.concatenate([chosen[:NUM_LENGTH_EXAMPLES - min(len(wrong), 1)],
                          wrong[:1]]).astype(int)
  plot_capsule_lengths(data.to_float(test.images[shown]), lengths[shown],
                       test.labels[shown], all_predicted[shown],
                       paths['capsule_lengths'])

  return _confusion_matrix_and_log(run, all_predicted, paths)


# ------------------------------------------------------- matrix capsules --


def visualize_em(run: runs.Run, out: str) -> dict[str, str]:
  """The figures of a matrix capsule network with EM routing (no decoder).

    em_assignments.png  one test example's EM assignments R of the class
                        capsule layer to its winning class, per iteration,
                        on the ConvCaps2 grid
    em_activations.png  the class capsules' activations of a few examples
    confusion_matrix.png

  Returns:
    Figure name -> path of each PNG written to `out`.
  """
  test = run.dataset.test
  crop_only = data.Preprocessing(crop_size=run.preprocessing.crop_size)
  paths = {name: os.path.join(out, f'{name}.png')
           for name in ('em_assignments', 'em_activations',
                        'confusion_matrix')}
  chosen = first_of_each_class(test.labels, MAX_CLASSES_SHOWN)
  # Shown as cropped pixels; the model sees them standardised too.
  shown_images = data.eval_images(test.images[chosen], crop_only)
  outputs = forward(run, test.images[chosen], reconstruct=False,
                    return_couplings=True)
  predicted = np.argmax(outputs.scores, -1)
  grid = run.model.capsule_grid()
  plot_couplings(
      shown_images[0], outputs.couplings[0], int(predicted[0]), grid,
      f'EM routing: assignments R of test example {chosen[0]} to its winning '
      f'class ({run.model.routing_iters} iterations, class capsule layer)',
      paths['em_assignments'], inputs_name='ConvCaps2 capsules',
      coupling_name='assignment')

  scores = scores_of_test_split(run)
  all_predicted = np.argmax(scores, -1)
  wrong = np.flatnonzero(all_predicted != test.labels)
  shown = np.concatenate([chosen[:NUM_LENGTH_EXAMPLES - min(len(wrong), 1)],
                          wrong[:1]]).astype(int)
  plot_capsule_lengths(
      data.eval_images(test.images[shown], crop_only),
      scores[shown], test.labels[shown], all_predicted[shown],
      paths['em_activations'], score_name='class activation')
  return _confusion_matrix_and_log(run, all_predicted, paths)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  cli.setup()
  with cli.user_errors_exit():
    visualize(FLAGS.workdir, FLAGS.out)



def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the command line's flags.

  Called only when run as a script, so importing this module (as the tests
  do) does not clash with the flags of capsjax.main.
  """
  flags.DEFINE_string('workdir', None, 'Workdir of a training run '
                      '(config.json and checkpoints/).',
                      flag_values=flag_values)
  flags.DEFINE_string('out', None, 'Directory for the PNGs; default '
                      'WORKDIR/figures.', flag_values=flag_values)
  flags.mark_flags_as_required(['workdir'], flag_values)

if __name__ == '__main__':
  define_flags()
  app.run(main)
