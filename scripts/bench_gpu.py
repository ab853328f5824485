"""Training throughput on one GPU: mvit_jax's train step against torchvision (eager and torch.compile), same card.

    python scripts/bench_gpu.py [--batch 16,32] [--steps 20] [--modes jax,jax/scan=off,jax/attention=cudnn,...]

MViT-B 16x4 (16x224x224, 400 classes), one fixed on-device batch of random clips (data loading excluded), each
mode in its own subprocess (JAX and torch never share the card's memory):
  jax[/KEY=VALUE...]: the trainer's own jitted, donated update (`trainer.make_train_step`: bf16 compute, float32
                 params and AdamW state, weight-decay mask, clipping at 1.0, label smoothing 0.1); KEYs:
                 pool (pool_impl: auto / slices / conv), scan (scan_blocks: on / off), attention (attention_impl:
                 einsum / xla / cudnn), remat (a remat policy, e.g. full);
  torch_eager:   torchvision mvit_v1_b, bf16 autocast, float32 params, fused AdamW, clip_grad_norm_ 1.0,
                 label smoothing 0.1;
  torch_compile: the same with `torch.compile(model)` (default mode).
Prints median step seconds, clips/s, MFU and peak device memory. MFU = clips/s x 3 x 2 x 70.5 GMAC (the paper's
forward multiply-adds, 2 flops each, training = 3x forward) / the card's dense bf16 datasheet peak.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, SIZE, NUM_CLASSES = 16, 224, 400
TRAIN_FLOPS_PER_CLIP = 3 * 2 * 70.5e9
PEAK_FLOPS = {'H100': 989.4e12, 'H200': 989.4e12, 'A100': 312e12}


def _median_step(step, steps: int) -> tuple[float, float]:
  """(first call seconds incl. compilation, median seconds of `steps` later calls); `step` blocks until done."""
  t = time.perf_counter()
  step()
  first = time.perf_counter() - t
  for _ in range(2):
    step()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)


def run_jax(batch: int, steps: int, options: dict[str, str]) -> dict:
  import jax
  import numpy as np
  sys.path.insert(0, REPO)
  from mvit_jax.train import config as config_lib
  from mvit_jax import models
  from mvit_jax.train import sharding
  from mvit_jax.train import trainer

  c = config_lib.base_config()
  c.model.name = 'mvit_b_16x4'
  unknown = set(options) - {'pool', 'scan', 'attention', 'remat'}
  if unknown:
    raise ValueError(f'unknown jax mode options {sorted(unknown)}')
  c.model.pool_impl = options.get('pool', 'auto')
  c.model.scan_blocks = options.get('scan', 'on') == 'on'
  c.model.attention_impl = options.get('attention', 'einsum')
  c.half_precision = True
  c.remat_policy = options.get('remat', '')
  c.batch_size = batch
  c.optimizer.base_batch_size = batch
  c.data.num_classes = NUM_CLASSES
  c.data.mixup_prob = 0.0
  c.data.random_erasing_prob = 0.0  # Neither does the torch baseline.
  model = models.create_model(c.model.name, **trainer.model_overrides(c, NUM_CLASSES))
  mesh = sharding.make_mesh({'data': 1, 'fsdp': 1, 'model': 1}, jax.devices()[:1])
  ts = trainer.TrainSetup.build(model, c, mesh, sharding.rules_from_config(c.sharding_rules))
  shape = (batch, T, SIZE, SIZE, 3)
  state = ts.init_state(ts.init_params(jax.random.key(0)))
  jitted = ts.jit_step(trainer.make_train_step(model, ts.tx, ts.schedule, c, NUM_CLASSES))

  def step_fn(*args):
    with ts.context():
      return jitted(*args)
  rng = np.random.default_rng(0)
  data = sharding.global_batch({'video': rng.integers(0, 256, shape, dtype=np.uint8),
                                'label': (np.arange(batch) % NUM_CLASSES).astype(np.int32)}, mesh)
  holder = {'state': state, 'i': 0}
  key = jax.random.key(1)

  def step():
    holder['i'] += 1
    holder['state'], metrics = step_fn(holder['state'], data, key, np.int32(holder['i']))
    jax.block_until_ready(metrics)
    return metrics

  first, median = _median_step(step, steps)
  loss = float(step()['loss'])
  stats = jax.devices()[0].memory_stats() or {}
  return {'first_s': first, 'step_s': median, 'loss': loss, 'jax': jax.__version__,
          'peak_gib': stats.get('peak_bytes_in_use', 0) / 2**30, 'device': jax.devices()[0].device_kind}


def run_torch(batch: int, steps: int, compile_model: bool) -> dict:
  import torch
  from torchvision.models.video import mvit_v1_b

  torch.manual_seed(0)
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  model = mvit_v1_b(num_classes=NUM_CLASSES).cuda().train()
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.05}, {'params': no_decay, 'weight_decay': 0.0}],
                          lr=1e-4, fused=True)
  forward = torch.compile(model) if compile_model else model
  x = torch.randn(batch, 3, T, SIZE, SIZE, device='cuda')
  y = torch.arange(batch, device='cuda') % NUM_CLASSES
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
  out = {}

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast('cuda', dtype=torch.bfloat16):
      loss = loss_fn(forward(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    torch.cuda.synchronize()
    out['loss'] = loss

  first, median = _median_step(step, steps)
  return {'first_s': first, 'step_s': median, 'loss': float(out['loss']), 'torch': torch.__version__,
          'peak_gib': torch.cuda.max_memory_allocated() / 2**30, 'device': torch.cuda.get_device_name()}


def run_mode(mode: str, batch: int, steps: int) -> dict:
  if mode == 'jax' or mode.startswith('jax/'):
    return run_jax(batch, steps, dict(option.split('=', 1) for option in mode.split('/')[1:]))
  if mode in ('torch_eager', 'torch_compile'):
    return run_torch(batch, steps, mode == 'torch_compile')
  raise ValueError(f'unknown mode {mode!r}')


def _peak_for(device: str) -> float:
  for name, peak in PEAK_FLOPS.items():
    if name in device:
      return peak
  return float('nan')


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', default='16,32', help='comma-separated batch sizes')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--modes', default='jax,jax/scan=off,jax/attention=xla,jax/attention=cudnn,torch_eager,'
                      'torch_compile')
  parser.add_argument('--timeout', type=int, default=400, help='seconds per mode')
  parser.add_argument('--json', default='', help='also write the results here')
  parser.add_argument('--child', default='')
  args = parser.parse_args()
  if args.child:
    print(json.dumps(run_mode(args.child, int(args.batch), args.steps)))
    return

  rows = []
  for batch in [int(b) for b in args.batch.split(',')]:
    for mode in args.modes.split(','):
      cmd = [sys.executable, __file__, '--child', mode, '--batch', str(batch), '--steps', str(args.steps)]
      try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout, check=False)
      except subprocess.TimeoutExpired:
        row = {'mode': mode, 'batch': batch, 'error': f'timeout after {args.timeout} s'}
      else:
        if proc.returncode:
          row = {'mode': mode, 'batch': batch, 'error': proc.stderr.strip().splitlines()[-1:]}
          sys.stderr.write(proc.stderr[-4000:])
        else:
          row = {'mode': mode, 'batch': batch, **json.loads(proc.stdout.strip().splitlines()[-1])}
          row['clips_per_s'] = batch / row['step_s']
          row['mfu'] = row['clips_per_s'] * TRAIN_FLOPS_PER_CLIP / _peak_for(row['device'])
      rows.append(row)
      print(json.dumps(row), flush=True)
      if args.json:
        with open(args.json, 'w') as f:
          json.dump(rows, f, indent=1)

  print(f'\n{"mode":<30}{"batch":>6}{"step s":>9}{"clips/s":>9}{"MFU":>7}{"peak GiB":>10}{"first s":>9}')
  for r in rows:
    if 'error' in r:
      print(f'{r["mode"]:<30}{r["batch"]:>6}  error: {r["error"]}')
    else:
      print(f'{r["mode"]:<30}{r["batch"]:>6}{r["step_s"]:>9.4f}{r["clips_per_s"]:>9.1f}{r["mfu"]:>7.1%}'
            f'{r["peak_gib"]:>10.1f}{r["first_s"]:>9.1f}')
  for batch in sorted({r['batch'] for r in rows}):
    ok = {r['mode']: r['clips_per_s'] for r in rows if r['batch'] == batch and 'error' not in r}
    best_jax = max((v for k, v in ok.items() if k.startswith('jax')), default=None)
    for ref in ('torch_eager', 'torch_compile'):
      if best_jax and ref in ok:
        print(f'batch {batch}: best mvit_jax / {ref} clips/s = {best_jax / ok[ref]:.2f}x')


if __name__ == '__main__':
  main()
