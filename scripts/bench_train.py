"""Training throughput on this machine: mvit_jax's train step against torchvision + torch AdamW, and the full
driver's overhead over the bare jitted step.

    python scripts/bench_train.py [--threads 2] [--steps 3] [--rounds 2] [--driver_steps 120]

Each measurement runs in its own subprocess pinned to the same `--threads` cores:
  pair:       mvit_b_16x4, batch 2, 16x224x224, float32: mvit_jax's jitted, donated update (forward + backward +
              AdamW with weight-decay mask, clipping at 1.0, label smoothing 0.1; `trainer.make_train_step`) and
              torchvision mvit_v1_b (forward + backward + clip_grad_norm_ + torch.optim.AdamW), each framework in
              its own process (one warm-up step, then `--steps` timed), torch / jax / torch / jax ... for `--rounds`
              rounds so that load drift hits both alike (in one process the two runtimes' thread pools get in
              each other's way).
  driver:     the demo config (mvit_tiny on the synthetic videos) through `trainer.train_and_evaluate`: seconds per
              step between the first and the last step (data loading, batch assembly, metrics, hooks included),
              against the bare jitted step of the same config on a fixed on-device batch, measured in a process
              before and in one after the driver (the mean of the two is the baseline).
Prints median seconds per step and the ratios (torch / jax >= 1.0: mvit_jax at least as fast; driver / bare - 1:
the driver's overhead).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, SIZE, BATCH = 16, 224, 2


def _pin(threads: int) -> None:
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))


def torch_step_fn(threads: int):
  """torchvision mvit_v1_b train step: forward + backward + clip_grad_norm_ + AdamW (no decay on 1-D params)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torchvision.models.video import mvit_v1_b  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = mvit_v1_b().train()
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.05}, {'params': no_decay, 'weight_decay': 0.0}],
                          lr=1e-4)
  x = torch.randn(BATCH, 3, T, SIZE, SIZE)
  y = torch.zeros(BATCH, dtype=torch.long)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

  return step


def _k400_config():
  from mvit_jax.train import config as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  c.model.name = 'mvit_b_16x4'
  c.half_precision = False  # float32 on CPU, like the torch baseline.
  c.batch_size = BATCH
  c.optimizer.base_batch_size = BATCH
  c.optimizer.base_lr = 1e-4
  c.data.num_classes = 400
  c.data.mixup_prob = 0.0
  c.data.random_erasing_prob = 0.0  # Neither does the torch baseline.
  return c


def _compiled_step(config, num_classes: int):
  """(step_fn, state, batch, rng) of the trainer's own update on a 1-device mesh, on fixed random data."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mvit_jax import models  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import sharding  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import trainer  # pylint: disable=g-import-not-at-top

  model = models.create_model(config.model.name, **trainer.model_overrides(config, num_classes))
  mesh = sharding.make_mesh({'data': 1, 'fsdp': 1, 'model': 1}, jax.devices()[:1])
  rules = sharding.rules_from_config(config.sharding_rules)
  ts = trainer.TrainSetup.build(model, config, mesh, rules)
  d = config.data
  shape = (config.batch_size, d.num_frames, d.crop_size, d.crop_size, 3)
  state = ts.init_state(ts.init_params(jax.random.key(0)))
  jitted = ts.jit_step(trainer.make_train_step(model, ts.tx, ts.schedule, config, num_classes))

  def step_fn(*args):
    with ts.context():
      return jitted(*args)
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({'video': rng.integers(0, 256, shape, dtype=np.uint8),  # As the loader ships.
                                 'label': (np.arange(config.batch_size) % num_classes).astype(np.int32)}, mesh)
  return step_fn, state, batch, jax.random.key(1)


def jax_step_fn():
  """mvit_jax's own jitted, donated update (`trainer.make_train_step`) for mvit_b_16x4 with the K400 optimizer."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  step_fn, state, batch, rng = _compiled_step(_k400_config(), 400)
  holder = {'state': state, 'i': 0}

  def step():
    holder['i'] += 1
    holder['state'], metrics = step_fn(holder['state'], batch, rng, np.int32(holder['i']))
    jax.block_until_ready(metrics)

  return step


def run_framework(framework: str, threads: int, steps: int) -> dict:
  """One framework's train step: first step (incl. compilation) and the median of `steps` timed steps."""
  step = torch_step_fn(threads) if framework == 'torch' else jax_step_fn()
  t = time.perf_counter()
  step()
  first = time.perf_counter() - t
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
  return {'step_s': statistics.median(times), 'first_s': first}


def _demo_config(num_train_steps: int):
  """experiments/demo.py's config with `num_train_steps`."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('demo', os.path.join(REPO, 'experiments', 'demo.py'))
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  config = demo.get_config()
  config.num_train_steps = num_train_steps
  return config


def run_driver(driver_steps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import trainer  # pylint: disable=g-import-not-at-top

  config = _demo_config(driver_steps)
  config.eval_every_steps = -1
  config.checkpoint_every_steps = driver_steps  # One save, at the end (outside the timed window).
  config.log_every_steps = 50

  # Time the driver's loop from the end of step 1 (compiled) to the end of the last step.
  stamps = {}
  original = trainer.TrainSetup.jit_step

  def timed_jit_step(self, train_step):
    step_fn = original(self, train_step)

    def wrapped(state, batch, base_rng, step):
      out = step_fn(state, batch, base_rng, step)
      if int(step) in (1, driver_steps):
        jax.block_until_ready(out)
        stamps[int(step)] = time.perf_counter()
      return out
    return wrapped

  trainer.TrainSetup.jit_step = timed_jit_step
  with tempfile.TemporaryDirectory() as workdir:
    trainer.train_and_evaluate(config, workdir)
    num_classes = config.synthetic_data.num_classes
  trainer.TrainSetup.jit_step = original
  driver_s = (stamps[driver_steps] - stamps[1]) / (driver_steps - 1)

  return {'driver_step_s': driver_s, 'num_classes': num_classes}


def run_bare(driver_steps: int) -> dict:
  """The demo config's jitted step alone, on one fixed on-device batch, timed like the driver's loop."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  config = _demo_config(driver_steps)
  step_fn, state, batch, rng = _compiled_step(config, config.synthetic_data.num_classes)
  state, m = step_fn(state, batch, rng, np.int32(1))
  jax.block_until_ready(m)
  t = time.perf_counter()
  for i in range(2, driver_steps + 1):
    state, m = step_fn(state, batch, rng, np.int32(i))
  jax.block_until_ready((state, m))
  return {'bare_step_s': (time.perf_counter() - t) / (driver_steps - 1)}


def _child(args) -> dict:
  cmd = [sys.executable, __file__, '--child', args.child_mode, '--threads', str(args.threads), '--steps',
         str(args.steps), '--driver_steps', str(args.driver_steps)]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f'{args.child_mode} failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--driver_steps', type=int, default=120)
  parser.add_argument('--only', nargs='+', default=['pair', 'driver'], choices=['pair', 'driver'],
                      help='Run only these measurements.')
  parser.add_argument('--rounds', type=int, default=2, help='torch / jax process pairs for the pair measurement')
  parser.add_argument('--child', choices=['torch', 'jax', 'driver', 'bare'])
  args = parser.parse_args()
  if args.child:
    _pin(args.threads)
    result = {'torch': lambda: run_framework('torch', args.threads, args.steps),
              'jax': lambda: run_framework('jax', args.threads, args.steps),
              'driver': lambda: run_driver(args.driver_steps),
              'bare': lambda: run_bare(args.driver_steps)}[args.child]()
    print(json.dumps(result))
    return
  results = {}
  if 'pair' in args.only:
    pair = {'torch': [], 'jax': []}
    for _ in range(args.rounds):
      for framework in ('torch', 'jax'):
        args.child_mode = framework
        pair[framework].append(_child(args))
        print(framework, json.dumps(pair[framework][-1]), flush=True)
    torch_s, jax_s = (statistics.median(r['step_s'] for r in pair[f]) for f in ('torch', 'jax'))
    per_round = ', '.join(f"{t['step_s'] / j['step_s']:.2f}" for t, j in zip(pair['torch'], pair['jax']))
    print(f'train step mvit_b_16x4 batch {BATCH} {T}x{SIZE}x{SIZE} float32, {args.threads} threads: mvit_jax '
          f'{jax_s:.2f} s, torchvision+AdamW {torch_s:.2f} s (medians over {args.rounds} processes each), ratio '
          f'torch/jax {torch_s / jax_s:.2f} (per round: {per_round})')
  if 'driver' in args.only:
    # The machine may be shared: the driver run is bracketed by two bare-step runs and compared with their mean.
    for mode in ('bare', 'driver', 'bare_after'):
      args.child_mode = 'bare' if mode == 'bare_after' else mode
      results[mode] = _child(args)
      print(mode, json.dumps(results[mode]), flush=True)
  if 'driver' in results:
    bare = [results['bare']['bare_step_s'], results['bare_after']['bare_step_s']]
    overhead = results['driver']['driver_step_s'] / statistics.mean(bare) - 1
    print(f"driver (demo config): {results['driver']['driver_step_s'] * 1e3:.1f} ms/step vs bare jitted step "
          f"{bare[0] * 1e3:.1f} / {bare[1] * 1e3:.1f} ms/step (before / after): overhead {100 * overhead:+.1f}%")


if __name__ == '__main__':
  main()
