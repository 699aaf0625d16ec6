"""Training and evaluation: `train_and_evaluate(config, workdir)`.

config -> validation -> data -> model -> losses ->
jitted steps -> checkpoints and metrics. Everything about a run lives in its
workdir (see `capsjax.workdir` for the files).
"""
import functools
import math
import time
from typing import Any

from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax
import tqdm

import capsjax
from capsjax import checkpoints
from capsjax import data
from capsjax import errors
from capsjax import metric_writers
from capsjax import models
from capsjax import parallel
from capsjax import preemption
from capsjax import validation
from capsjax import workdir as workdir_lib


# Step metrics that must stay finite; checked before anything is saved.
_FINITE_METRICS = ('loss', 'grad_norm', 'param_norm')


def _first_non_finite(fetched: list[dict], first_step: int):
  """`(step, {name: value})` of the first step with a non-finite metric.

  Args:
    fetched: host copies of the metrics of consecutive steps.
    first_step: the step of `fetched[0]`.

  Returns:
    None if every `_FINITE_METRICS` value is finite.
  """
  for step, metrics in enumerate(fetched, start=first_step):
    bad = {k: float(metrics[k]) for k in _FINITE_METRICS
           if not math.isfinite(float(metrics[k]))}
    if bad:
      return step, bad
  return None


def _non_finite_error(step: int, bad: dict, ckpt: checkpoints.Checkpointer,
                      config: ml_collections.ConfigDict
                      ) -> errors.NonFiniteError:
  ckpt.wait_until_finished()
  good = ckpt.latest_step()
  values = ', '.join(f'{k} = {v}' for k, v in bad.items())
  kept = (f'the last good checkpoint, step {good} in {ckpt.directory}, is '
          f'kept and a rerun resumes from it' if good is not None else
          'no checkpoint was saved before it')
  return errors.NonFiniteError(
      f'training stopped at step {step}: {values} (not finite); no checkpoint '
      f'of that state was written and {kept}; rerun with a lower '
      f'--config.learning_rate (now {config.learning_rate}) or check the '
      f'data.')


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """`learning_rate * lr_decay_rate ** floor(step / lr_decay_steps)`.

  The paper's official code decays Adam's rate by 0.96 every 2,000 steps.
  """
  return optax.exponential_decay(
      init_value=config.learning_rate, transition_steps=config.lr_decay_steps,
      decay_rate=config.lr_decay_rate, staircase=True)


class BatchStatsTrainState(train_state.TrainState):
  """A TrainState that also carries batch norm's running statistics.

  Used only for models with a 'batch_stats' collection, so that the
  checkpoints of the others keep their tree.
  """
  batch_stats: Any = None


def create_train_state(config: ml_collections.ConfigDict,
                       model: nn.Module,
                       rng: jax.Array) -> train_state.TrainState:
  images = jnp.zeros((1, *model.input_shape), jnp.float32)
  # Jitted: run eagerly, the init's forward pass dispatches hundreds of small
  # ops one by one (seconds on CPU for the 81-tap PrimaryCaps).
  variables = jax.jit(model.init)(rng, images, jnp.zeros((1,), jnp.int32))
  tx = optax.adam(learning_rate_schedule(config))
  if 'batch_stats' in variables:
    return BatchStatsTrainState.create(
        apply_fn=model.apply, params=variables['params'], tx=tx,
        batch_stats=variables['batch_stats'])
  return train_state.TrainState.create(apply_fn=model.apply,
                                       params=variables['params'], tx=tx)


def model_variables(state: train_state.TrainState, params=None) -> dict:
  """What `model.apply` takes: `{'params'}` plus 'batch_stats' if it has any.

  Args:
    state: a TrainState from `create_train_state`.
    params: used instead of `state.params` (the ones being differentiated).
  """
  variables = {'params': state.params if params is None else params}
  if isinstance(state, BatchStatsTrainState):
    variables['batch_stats'] = state.batch_stats
  return variables


def correct(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """`[B]` bool: the top-T scores are exactly the labels.

  `labels: [B]` (T = 1, argmax) or `[B, T]` distinct classes (MultiMNIST,
  T = 2: correct when the two highest scores are the image's two digits).
  """
  if labels.ndim == 1:
    return jnp.argmax(scores, -1) == labels
  top = jax.lax.top_k(scores, labels.shape[-1])[1]
  return jnp.all(jnp.sort(top, -1) == jnp.sort(labels, -1), axis=-1)


def per_example_metrics(objective, outputs, batch, loss_config, step):
  """The objective's per-example losses plus 'accuracy' (see `correct`)."""
  metrics = objective(outputs, batch, loss_config, step)
  metrics['accuracy'] = correct(outputs.scores,
                                batch['label']).astype(jnp.float32)
  return metrics


def train_step(state: train_state.TrainState, batch: dict[str, jax.Array],
               rng: jax.Array, *, objective,
               loss_config: ml_collections.ConfigDict,
               num_microbatches: int = 1):
  """One Adam step on the batch-mean loss. Returns `(state, metrics)`.

  The decoder is masked by the true label (Section 4.1). `rng` feeds the
  model's dropout (if any); `train_and_evaluate` derives it from the seed and
  the step, so a resumed run draws the same masks. `objective` is the
  model's (`models.ModelSpec.objective`).

  With `num_microbatches` n > 1 the batch is split into n equal parts whose
  gradients and metrics are averaged: the same step up to float rounding (the
  loss is a mean of per-example terms), computed one part after the other in
  a `lax.scan`, so its working set is one part's. Part t holds rows t, t + n,
  t + 2n, ..., so every device's shard of the batch contributes equally to
  every part.

  A model with batch norm (`BatchStatsTrainState`) normalises with each
  part's statistics, and its running averages become the mean of the parts'
  updates.
  """
  reconstruct = loss_config.reconstruction_weight > 0
  has_stats = isinstance(state, BatchStatsTrainState)

  def grads_and_metrics(part, part_rng):
    def loss_fn(params):
      outputs = state.apply_fn(model_variables(state, params), part['image'],
                               part['label'], train=True,
                               reconstruct=reconstruct,
                               rngs={'dropout': part_rng},
                               mutable=['batch_stats'] if has_stats else False)
      updates = {}
      if has_stats:
        outputs, updates = outputs
      per_example = per_example_metrics(objective, outputs, part, loss_config,
                                        state.step)
      means = jax.tree.map(jnp.mean, per_example)
      return means['loss'], (means, updates.get('batch_stats'))
    grads, (means, stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    return grads, means, stats

  n = num_microbatches
  if n == 1:
    grads, metrics, batch_stats = grads_and_metrics(batch, rng)
  else:
    # [n, B / n, ...]: part t is rows t, t + n, t + 2n, ...
    parts = jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(-1, n, *x.shape[1:]), 0, 1), batch)

    def add_part(total, part_and_index):
      part, t = part_and_index
      out = grads_and_metrics(part, jax.random.fold_in(rng, t))
      return jax.tree.map(jnp.add, total, out), None

    # A scan, not a Python loop: XLA:CPU keeps every unrolled part's
    # buffers alive at once (docs/performance.md).
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype),
        jax.eval_shape(grads_and_metrics,
                       jax.tree.map(lambda x: x[0], parts), rng))
    total, _ = jax.lax.scan(add_part, zeros, (parts, jnp.arange(n)))
    grads, metrics, batch_stats = jax.tree.map(lambda x: x / n, total)
  metrics['grad_norm'] = optax.tree.norm(grads)
  state = state.apply_gradients(grads=grads)
  if has_stats:
    state = state.replace(batch_stats=batch_stats)
  metrics['param_norm'] = optax.tree.norm(state.params)
  return state, metrics


def eval_step(state: train_state.TrainState, batch: dict[str, jax.Array], *,
              objective, loss_config: ml_collections.ConfigDict):
  """Sums of the per-example metrics over the real (mask = 1) examples.

  The decoder is masked by the predicted class, as at test time in the paper.
  Batch norm uses its running averages (`train=False`).
  """
  reconstruct = loss_config.reconstruction_weight > 0
  outputs = state.apply_fn(model_variables(state), batch['image'],
                           reconstruct=reconstruct)
  per_example = per_example_metrics(objective, outputs, batch, loss_config,
                                    state.step)
  sums = jax.tree.map(lambda x: jnp.sum(x * batch['mask']), per_example)
  sums['count'] = jnp.sum(batch['mask'])
  return sums


def evaluate(eval_step_fn, state, split: data.Split,
             batch_size: int,
             mesh: jax.sharding.Mesh | None = None,
             preprocessing: data.Preprocessing = data.Preprocessing()
             ) -> dict[str, float]:
  """Mean metrics over the whole split, every example counted once.

  Each host reads only its rows of every batch; `eval_step_fn` (see
  `parallel.jit_eval_step`) gets the global batch, sharded over `mesh`
  (default: all devices). `preprocessing`: the run's, of which evaluation
  applies the central crop and standardization (`data.eval_batches`).
  """
  totals = None
  mesh = parallel.create_mesh() if mesh is None else mesh
  for batch in data.eval_batches(
      split, batch_size, preprocessing=preprocessing,
      process_index=jax.process_index(), process_count=jax.process_count()):
    sums = eval_step_fn(state, parallel.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals.pop('count'))
  metrics = {k: float(v) / count for k, v in totals.items()}
  metrics['error_pct'] = 100.0 * (1.0 - metrics['accuracy'])
  metrics['num_examples'] = count
  return metrics


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> tuple[train_state.TrainState, dict]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Rerunning a finished run returns its summary without training; rerunning
  with a larger `num_train_steps` continues to the new total.

  Returns:
    The final TrainState and the summary dict also written to
    `WORKDIR/summary.json`: test_accuracy, test_error_pct, test_loss, steps,
    train_images_per_s, wall_s (both over all invocations of the run),
    num_params, dataset, train_examples (the size of its training split).

  Raises:
    errors.UserError: the config, data or workdir cannot work (checked before
      anything in the workdir is created or changed), or a checkpoint does not
      fit.
    errors.NonFiniteError: a step's loss, gradient norm or parameter norm is
      NaN or infinite; raised before that state is logged or saved.
    errors.DiskFullError: a checkpoint or metrics file did not fit; the
      previous checkpoint is intact.
    errors.Preempted: SIGTERM or SIGINT came during training (see
      `capsjax.preemption`); the step in progress was finished, logged and
      saved, and every process stopped at that step.
  """
  start_time = time.perf_counter()
  validation.check_config(config)
  mesh = parallel.create_mesh()
  microbatch_size = config.microbatch_size or config.batch_size
  for name, value in (('batch_size', config.batch_size),
                      ('eval_batch_size', config.eval_batch_size),
                      ('microbatch_size', microbatch_size)):
    if error := parallel.divisibility_error(name, value, mesh):
      raise errors.ConfigError(error)
  dataset = data.load(config.dataset)
  logging.info('Dataset %s: %d train, %d test, images %s, %d classes.',
               dataset.name, dataset.train.num_examples,
               dataset.test.num_examples, dataset.image_shape,
               dataset.num_classes)
  model = validation.check_data(config, dataset)
  preprocessing = data.Preprocessing.from_config(config.dataset, dataset)
  # Nothing in the workdir was touched before this line.
  logging.info('%s', parallel.describe(mesh, config.batch_size))
  is_writer = jax.process_index() == 0
  workdir = workdir_lib.prepare(workdir, is_leader=is_writer,
                                wait=parallel.wait_for_all_processes)
  state = parallel.init_replicated(
      lambda: create_train_state(config, model, jax.random.key(config.seed)),
      mesh)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('Model %s with %d parameters on %s.', config.model.name,
               num_params, jax.devices()[0].platform)
  model_config = config.model.to_dict()
  ckpt = checkpoints.Checkpointer(workdir_lib.path(workdir,
                                                  workdir_lib.CHECKPOINTS),
                                  max_to_keep=config.max_checkpoints_to_keep)
  progress = {'train_time_s': 0.0, 'train_images': 0, 'wall_s': 0.0}
  restored = ckpt.restore_latest(state, model_config,
                                 sharding=parallel.replicated(mesh))
  if restored is not None:
    latest, state, meta = restored
    progress = {k: meta['progress'][k] for k in progress}
    for key in ('seed', 'batch_size'):
      if meta[key] != config[key]:
        logging.warning('Resuming with %s=%r, but the checkpoint was trained '
                        'with %r: the data order differs from an '
                        'uninterrupted run.', key, config[key], meta[key])
    logging.info('Resumed from %s at step %d.', ckpt.directory, latest)
  # Committed and replicated like train_step's outputs, so that fresh,
  # restored and trained states share one compiled step (a restored state
  # otherwise compiled it twice: as restored, then as trained).
  state = jax.device_put(state, parallel.replicated(mesh))
  start_step = int(state.step)
  if is_writer:
    # Only now: a config the checkpoint refused must not replace the record.
    workdir_lib.write_json(workdir_lib.path(workdir, workdir_lib.CONFIG),
                           config.to_dict())

  summary_path = workdir_lib.path(workdir, workdir_lib.SUMMARY)
  if start_step >= config.num_train_steps:
    summary = workdir_lib.read_json(summary_path)
    if summary is not None and summary.get('steps') == start_step:
      logging.info('Already trained to step %d; summary in %s.', start_step,
                   summary_path)
      ckpt.close()
      return state, summary

  objective = models.spec(config.model).objective
  step_with_rng = functools.partial(
      train_step, objective=objective, loss_config=config.loss,
      num_microbatches=config.batch_size // microbatch_size)
  # Dropout masks are a pure function of (seed, step), like the batches.
  dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
  train_step_fn = parallel.jit_train_step(
      lambda state, batch: step_with_rng(
          state, batch, jax.random.fold_in(dropout_key, state.step)), mesh)
  eval_step_fn = parallel.jit_eval_step(
      functools.partial(eval_step, objective=objective,
                        loss_config=config.loss), mesh)
  writer = metric_writers.MetricWriter(workdir, enabled=is_writer,
                                       resume_step=start_step)

  def meta():
    return {'seed': config.seed, 'batch_size': config.batch_size,
            'model': model_config,
            'progress': dict(progress, wall_s=progress['wall_s'] +
                             time.perf_counter() - start_time)}

  batches = data.train_batches(
      dataset.train, batch_size=config.batch_size, seed=config.seed,
      preprocessing=preprocessing, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  schedule = learning_rate_schedule(config)
  pending = []  # Metrics since the last log, fetched to the host at boundaries.
  test_metrics = None
  bar = tqdm.tqdm(total=config.num_train_steps, initial=start_step,
                  disable=not is_writer or None, dynamic_ncols=True,
                  desc='train')
  timed_since, timed_images = None, 0
  stop_request = preemption.StopOnSignal().install()
  stopped_at = None
  try:
    for step in range(start_step + 1, config.num_train_steps + 1):
      state, metrics = train_step_fn(
          state, parallel.global_batch(next(batches), mesh))
      pending.append(metrics)
      if len(pending) > 1:
        # Steps are dispatched asynchronously: without this wait the host
        # runs up to a log interval ahead, and a stop request (SIGTERM with
        # a grace period) would wait for every step dispatched since.
        # Waiting for the previous step keeps this one queued behind it.
        jax.block_until_ready(pending[-2])
      bar.update(1)
      if timed_since is None:
        # The first step compiles: keep it out of images/s.
        jax.block_until_ready(state)
        logging.info('Ready after %.1f s (data, init and compilation).',
                     time.perf_counter() - start_time)
        timed_since = time.perf_counter()
      else:
        timed_images += config.batch_size

      last = step == config.num_train_steps
      # Every process polls at every step, so all stop at the same one.
      stop = parallel.any_process(stop_request.requested) and not last
      log_now = step % config.log_every_steps == 0 or last or stop
      eval_now = step % config.eval_every_steps == 0 or last
      save_now = step % config.checkpoint_every_steps == 0 or last or stop
      if not (log_now or eval_now or save_now):
        continue
      jax.block_until_ready(state)
      progress['train_time_s'] += time.perf_counter() - timed_since
      progress['train_images'] += timed_images
      # Every step since the last log, before anything is logged or saved.
      # Kept as host values, so a later boundary does not fetch them again.
      pending = jax.device_get(pending)
      non_finite = _first_non_finite(pending, step - len(pending) + 1)
      if non_finite:
        raise _non_finite_error(*non_finite, ckpt, config)

      if log_now and pending:
        means = {k: sum(float(m[k]) for m in pending) / len(pending)
                 for k in pending[0]}
        means['error_pct'] = 100.0 * (1.0 - means['accuracy'])
        means['learning_rate'] = float(schedule(step - 1))
        if progress['train_time_s'] > 0:
          means['images_per_s'] = (progress['train_images'] /
                                   progress['train_time_s'])
        writer.write_scalars(step, 'train', means)
        bar.set_postfix(loss=f'{means["loss"]:.4f}',
                        acc=f'{means["accuracy"]:.3f}')
        logging.info('step %d: train loss %.4f, accuracy %.4f.', step,
                     means['loss'], means['accuracy'])
        pending = []
      if eval_now:
        test_metrics = evaluate(eval_step_fn, state, dataset.test,
                                config.eval_batch_size, mesh, preprocessing)
        writer.write_scalars(step, 'test', test_metrics)
        logging.info('step %d: test loss %.4f, accuracy %.4f (error %.2f%%).',
                     step, test_metrics['loss'], test_metrics['accuracy'],
                     test_metrics['error_pct'])
      if save_now:
        ckpt.save(step, state, meta())
      if stop:
        stopped_at = step
        break
      timed_since, timed_images = time.perf_counter(), 0
  finally:
    bar.close()
    batches.close()
    writer.close()
    ckpt.wait_until_finished()
    stop_request.restore()

  if stopped_at is not None:
    ckpt.close()
    cause = (stop_request.name if stop_request.requested else
             'a signal to another process')
    raise errors.Preempted(
        f'{cause} at step {stopped_at} of {config.num_train_steps}: '
        f'checkpoint {stopped_at} saved in {ckpt.directory}, metrics in '
        f'{workdir_lib.path(workdir, workdir_lib.METRICS)}; rerun the same '
        f'command to resume from step {stopped_at}.')

  final_step = int(state.step)
  if test_metrics is None:
    # Nothing was trained in this invocation (restored a finished run whose
    # summary was missing): evaluate the restored state.
    test_metrics = evaluate(eval_step_fn, state, dataset.test,
                            config.eval_batch_size, mesh, preprocessing)
  progress['wall_s'] += time.perf_counter() - start_time
  ckpt.close()
  train_rate = (progress['train_images'] / progress['train_time_s']
                if progress['train_time_s'] > 0 else None)
  summary = {
      'steps': final_step,
      'test_accuracy': test_metrics['accuracy'],
      'test_error_pct': test_metrics['error_pct'],
      'test_loss': test_metrics['loss'],
      'test_examples': int(test_metrics['num_examples']),
      'train_images_per_s': train_rate,
      'wall_s': progress['wall_s'],
      'num_params': int(num_params),
      'dataset': dataset.name,
      'train_examples': dataset.train.num_examples,
      'routing_iters': config.model.routing_iters,
      'seed': config.seed,
      'capsjax_version': capsjax.__version__,
  }
  if is_writer:
    workdir_lib.write_json(summary_path, summary)
  logging.info('Summary: %s', summary)
  return state, summary
