r"""The paper's CapsNet in plain PyTorch: the yardstick of benchmark.py.

Sabour, Frosst & Hinton (2017), Section 4, written the way a PyTorch user
would write it: `nn.Conv2d` for Conv1 and PrimaryCaps, u_hat and the routing
as einsums, the 512-1024 decoder masked by the label (training) or the longest
capsule (evaluation), margin loss + 0.0005 x summed squared reconstruction
error, Adam. It times steps on random images and prints one JSON line:

    pip install -e '.[torch]'      # or any Python with torch
    python experiments/torch_reference.py --mode=train --batch=128 \
        --routing_iters=3 --steps=8 --warmup=2 --dtype=float32
    python experiments/torch_reference.py --mode=eval --dtype=bfloat16

`--dtype=bfloat16` runs the model under `torch.autocast(device,
torch.bfloat16)` (convolutions, linear layers and matmuls in bfloat16, the
loss in float32): what a PyTorch user would switch on for speed on a CPU with
native bfloat16 matmuls or on a GPU. `--compile` runs the model through
`torch.compile` (the optimizer step stays eager); its compilation happens in
the warm-up steps, so give it `--warmup` >= 2. `--device` is 'cuda' where
torch sees a GPU ('auto'), else 'cpu'. The JSON row's `form` names the three
forms benchmark.py compares: float32, bfloat16 (autocast) and compiled_<dtype>.
`--image_size/--channels/--num_classes` give the CIFAR-sized networks (32, 3,
10 or 100).

Needs only torch; no capsjax import, so it runs in a torch-only environment.
"""
import argparse
import json
import resource
import time

import torch
from torch import nn
from torch.nn import functional as F


def squash(s: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
  """Eq. 1 over the last axis; eps inside the root as in capsjax.ops."""
  sq_norm = (s * s).sum(-1, keepdim=True)
  return sq_norm / (1 + sq_norm) * s / torch.sqrt(sq_norm + eps)


class CapsNet(nn.Module):
  """Conv1 -> PrimaryCaps -> DigitCaps (dynamic routing) -> decoder."""

  def __init__(self, image_size=28, channels=1, num_classes=10,
               routing_iters=3):
    super().__init__()
    self.image_size, self.channels = image_size, channels
    self.num_classes, self.routing_iters = num_classes, routing_iters
    self.conv1 = nn.Conv2d(channels, 256, 9)
    self.primary = nn.Conv2d(256, 32 * 8, 9, stride=2)
    grid = (image_size - 8 - 9) // 2 + 1
    self.grid = grid
    num_primary = 32 * grid * grid
    # W_ij: [num_in, num_out, 16, 8], initialised as capsjax does.
    self.W = nn.Parameter(0.01 * torch.randn(num_primary, num_classes, 16, 8))
    self.decoder = nn.Sequential(
        nn.Linear(16 * num_classes, 512), nn.ReLU(),
        nn.Linear(512, 1024), nn.ReLU(),
        nn.Linear(1024, image_size * image_size * channels), nn.Sigmoid())

  def forward(self, x, labels=None):
    """x: [B, C, H, W] -> (lengths [B, K], reconstructions [B, C*H*W])."""
    n = x.shape[0]
    h = F.relu(self.conv1(x))
    # Channel t * 8 + d is component d of a type-t capsule.
    u = self.primary(h).view(n, 32, 8, self.grid, self.grid)
    u = squash(u.permute(0, 1, 3, 4, 2).reshape(n, -1, 8))
    u_hat = torch.einsum('ijdk,bik->bijd', self.W, u)
    logits = torch.zeros(u_hat.shape[:3], dtype=u_hat.dtype, device=x.device)
    for t in range(self.routing_iters):
      c = logits.softmax(dim=2)
      v = squash(torch.einsum('bij,bijd->bjd', c, u_hat))
      if t < self.routing_iters - 1:
        logits = logits + torch.einsum('bijd,bjd->bij', u_hat, v)
    lengths = torch.sqrt((v * v).sum(-1) + 1e-7)
    select = lengths.argmax(-1) if labels is None else labels
    mask = F.one_hot(select, self.num_classes).to(v.dtype)
    reconstructions = self.decoder((v * mask[..., None]).reshape(n, -1))
    return lengths, reconstructions


def capsnet_loss(lengths, reconstructions, images, labels,
                 reconstruction_weight=0.0005):
  """Margin loss (Eq. 4) + weighted summed squared error, batch mean."""
  lengths, reconstructions = lengths.float(), reconstructions.float()
  t = F.one_hot(labels, lengths.shape[1]).float()
  margin = (t * F.relu(0.9 - lengths) ** 2 +
            0.5 * (1 - t) * F.relu(lengths - 0.1) ** 2).sum(-1)
  sse = ((reconstructions - images.flatten(1)) ** 2).sum(-1)
  return (margin + reconstruction_weight * sse).mean()


def make_step(model, optimizer, images, labels, mode: str, dtype: str):
  """One train step (forward, backward, Adam) or one eval step."""
  autocast = dict(device_type=images.device.type, dtype=torch.bfloat16,
                  enabled=dtype == 'bfloat16')

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(**autocast):
      lengths, reconstructions = model(images, labels)
    loss = capsnet_loss(lengths, reconstructions, images, labels)
    loss.backward()
    optimizer.step()
    return loss.detach()

  @torch.inference_mode()
  def eval_step():
    with torch.autocast(**autocast):
      lengths, reconstructions = model(images)
    loss = capsnet_loss(lengths, reconstructions, images, labels)
    correct = (lengths.argmax(-1) == labels).sum()
    return loss + correct

  if mode == 'train':
    model.train()
    return train_step
  model.eval()
  return eval_step


def resolve_device(device: str = 'auto') -> torch.device:
  """'auto' -> cuda where torch sees a GPU, else cpu."""
  if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
  return torch.device(device)


def form_name(dtype: str, compile_model: bool) -> str:
  """'float32', 'bfloat16', 'compiled_float32' or 'compiled_bfloat16'."""
  return f'compiled_{dtype}' if compile_model else dtype


def device_name(device: torch.device) -> str:
  if device.type == 'cuda':
    return f'cuda:{torch.cuda.get_device_name(device)}'
  return device.type


def measure(mode='train', batch=128, routing_iters=3, steps=8, warmup=2,
            dtype='float32', image_size=28, channels=1, num_classes=10,
            seed=0, device='auto', compile_model=False) -> dict:
  """Times `steps` steps after `warmup`; returns the JSON row."""
  device = resolve_device(device)
  torch.manual_seed(seed)
  net = CapsNet(image_size, channels, num_classes, routing_iters).to(device)
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
  model = torch.compile(net) if compile_model else net
  images = torch.rand(batch, channels, image_size, image_size, device=device)
  labels = torch.randint(0, num_classes, (batch,), device=device)
  step = make_step(model, optimizer, images, labels, mode, dtype)
  start = time.perf_counter()
  for _ in range(warmup):
    float(step())
  warmup_s = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    float(step())  # Waits for the result, as block_until_ready does in JAX.
    times.append(time.perf_counter() - start)
  seconds = sorted(times)[len(times) // 2]
  matmul_peak = matmul_flops_per_s(dtype, device=device)
  return {
      'framework': 'torch', 'torch': torch.__version__,
      'device': device_name(device), 'threads': torch.get_num_threads(),
      'mode': mode, 'batch': batch, 'routing': routing_iters, 'dtype': dtype,
      'compile': compile_model, 'form': form_name(dtype, compile_model),
      'warmup_s': warmup_s,
      'input': [image_size, image_size, channels], 'num_classes': num_classes,
      'step_ms': 1e3 * seconds, 'images_per_s': batch / seconds,
      'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      'matmul_peak_gflop_per_s': matmul_peak / 1e9,
  }


def matmul_flops_per_s(dtype='float32', n=2048, steps=5,
                       device=torch.device('cpu')) -> float:
  """FLOP/s of a dense n^3 torch matmul in `dtype` (the benchmark measures
  XLA's the same way), the median of `steps` after two warm-up runs."""
  a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
  times = []
  for k in range(2 + steps):
    start = time.perf_counter()
    a @ a
    if device.type == 'cuda':
      torch.cuda.synchronize(device)  # Kernels run asynchronously there.
    if k >= 2:
      times.append(time.perf_counter() - start)
  return 2.0 * n**3 / sorted(times)[len(times) // 2]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--mode', choices=['train', 'eval'], default='train')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--routing_iters', type=int, default=3)
  parser.add_argument('--steps', type=int, default=8)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--dtype', choices=['float32', 'bfloat16'],
                      default='float32')
  parser.add_argument('--compile', dest='compile_model', action='store_true',
                      help='run the model through torch.compile')
  parser.add_argument('--device', default='auto',
                      help="'auto' (cuda if available), 'cpu' or 'cuda'")
  parser.add_argument('--image_size', type=int, default=28)
  parser.add_argument('--channels', type=int, default=1)
  parser.add_argument('--num_classes', type=int, default=10)
  args = parser.parse_args(argv)
  for name in ('batch', 'routing_iters', 'steps', 'num_classes', 'channels'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be >= 1')
  if args.image_size < 25:
    parser.error('--image_size must be >= 25 (Conv1 9x9, PrimaryCaps 9x9/2)')
  if args.device not in ('auto', 'cpu', 'cuda'):
    parser.error(f'--device must be auto, cpu or cuda, not {args.device!r}')
  if args.device == 'cuda' and not torch.cuda.is_available():
    parser.error('--device=cuda, but this torch sees no CUDA GPU; use '
                 '--device=cpu or a CUDA build of torch')
  print(json.dumps(measure(**vars(args))), flush=True)


if __name__ == '__main__':
  main()
