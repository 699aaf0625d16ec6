"""One of two CPU "hosts" of a multi-process run, started by test_parallel.py.

    python tests/multihost_worker.py PROCESS_ID COORDINATOR_PORT OUT_DIR

Connects to the other process with `parallel.initialize_distributed`, then
builds global batches from each process's rows, evaluates a split through
`train.evaluate` and saves a replicated checkpoint. Process 0 writes what it
saw to OUT_DIR/multihost.json for the test to compare against one process.
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from capsjax import checkpoints
from capsjax.data import batching
from capsjax.data.dataset import Split
from capsjax import parallel
from capsjax import train

NUM_PROCESSES = 2
# A split whose label is the example's index and whose pixels encode it.
NUM_EXAMPLES, BATCH_SIZE, EVAL_BATCH_SIZE, SEED, MAX_SHIFT = 37, 8, 12, 1, 2


def labelled_split():
  labels = np.arange(NUM_EXAMPLES, dtype=np.int32)
  images = np.broadcast_to(labels[:, None, None, None] % 256,
                           (NUM_EXAMPLES, 6, 6, 1)).astype(np.uint8)
  return Split(images=images, labels=labels)


def batch_summary(batch):
  """Order-sensitive fingerprints of a global batch."""
  weights = jnp.arange(1, batch['label'].shape[0] + 1, dtype=jnp.float32)
  return {'weighted_labels': jnp.sum(weights * batch['label']),
          'image_sums': jnp.sum(batch['image'], axis=(1, 2, 3))}


def main(process_id: int, port: int, out_dir: str) -> None:
  # Before any other JAX call (imports are not calls).
  parallel.initialize_distributed(f'localhost:{port}', NUM_PROCESSES,
                                  process_id)

  mesh = parallel.create_mesh()
  split = labelled_split()
  out = {'describe': parallel.describe(mesh, BATCH_SIZE),
         # Given host 1's devices first, the mesh still starts with host 0's.
         'mesh_order': [[d.process_index, d.id] for d in parallel.create_mesh(
             jax.devices()[::-1]).devices.flat]}

  summarize = jax.jit(batch_summary, out_shardings=parallel.replicated(mesh))
  for step in range(3):
    rows = batching.train_batch(
        split, step, batch_size=BATCH_SIZE, seed=SEED,
        preprocessing=batching.Preprocessing(max_shift=MAX_SHIFT),
        process_index=jax.process_index(), process_count=jax.process_count())
    out[f'step_{step}'] = jax.tree.map(
        lambda x: np.asarray(x).tolist(),
        summarize(parallel.global_batch(rows, mesh)))

  def eval_step(state, batch):
    del state
    return {'accuracy': jnp.sum(batch['mask']),
            'loss': jnp.sum(batch['mask'] * batch['label']),
            'count': jnp.sum(batch['mask'])}

  out['eval'] = train.evaluate(parallel.jit_eval_step(eval_step, mesh), {},
                               split, EVAL_BATCH_SIZE, mesh)

  state = parallel.init_replicated(
      lambda: {'w': jnp.arange(6.0), 'step': jnp.int32(3)}, mesh)
  ckpt = checkpoints.Checkpointer(os.path.join(out_dir, 'checkpoints'))
  ckpt.save(3, state, {'step': 3})
  ckpt.wait_until_finished()
  ckpt.close()

  if jax.process_index() == 0:
    with open(os.path.join(out_dir, 'multihost.json'), 'w') as f:
      json.dump(out, f)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
