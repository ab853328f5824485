r"""Where the TPU compile time of the train step goes: compiles a part of it for a TPU topology (no TPU needed)
and prints libtpu's stage durations and its slowest fusions.

  python scripts/tpu_compile_bisect.py --config experiments/k400_mvit_b.py --topology v5e:2x2 --per_chip_batch 8 \
      --config.model.pool_impl=conv --what step|forward|grad|optimizer
  python scripts/tpu_compile_bisect.py --what op:stem_kgrad --per_chip_batch 8     # one op on one chip

--what: `step` the trainer's step (mvit_jax.aot.compile_train_step); `forward` the loss without gradients;
`grad` the loss and its gradients (no optimizer); `optimizer` clipping + AdamW update alone on the params' shapes;
`op:NAME` one op at MViT-B 16x4 shapes on one chip (see OPS). libtpu writes its log to $TPU_LOG_DIR (default
/tmp/tpu_logs), one file per process: the script reads its own and prints the HLO_PASSES / BACKEND_PASSES /
CODE_GENERATION durations, and the fusions libtpu reported as slow (over 2 minutes each) or recompiled.
"""
import glob
import os
import re
import time

from absl import app
from absl import flags

from mvit_jax.tools import aot

# --config, --topology, --per_chip_batch and --compiler_option are mvit_jax.aot's flags.
_WHAT = flags.DEFINE_string('what', 'step', 'step | forward | grad | optimizer | op:NAME')
FLAGS = flags.FLAGS

_STAGE = re.compile(r'(HLO_PASSES|BACKEND_PASSES|CODE_GENERATION|END_TO_END) stage duration: ([\d.hms]+)')
_SLOW = re.compile(r'Slow compilation warning:\s*\n\s*(\S+)')
_TOOK = re.compile(r'Successful retry compilation of (\S+) after retry_count=(\d+)')


def libtpu_log_summary(pid: int) -> list[str]:
  """Stage durations and slow / retried fusions from libtpu's INFO log of process `pid`."""
  paths = glob.glob(os.path.join(os.environ.get('TPU_LOG_DIR', '/tmp/tpu_logs'), f'*.INFO.*.{pid}'))
  if not paths:
    return ['(no libtpu log found)']
  text = open(max(paths, key=os.path.getmtime), errors='replace').read()
  lines = [f'  {name:16s} {duration}' for name, duration in _STAGE.findall(text)]
  lines += [f'  slow fusion (> 2 min): {name}' for name in dict.fromkeys(_SLOW.findall(text))]
  lines += [f'  fusion recompiled {count}x: {name}' for name, count in _TOOK.findall(text)]
  return lines


def _abstract_training_inputs(config, devices, per_chip_batch):
  import jax  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from mvit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config, mesh = aot.check_inputs(config, devices, per_chip_batch)
  num_classes = sources.num_classes_from_config(config.data)
  model, _ = trainer.make_model(config, num_classes)
  ts = trainer.TrainSetup.build(model, config, mesh, sharding_lib.rules_from_config(config.sharding_rules))
  batch = trainer.abstract_train_batch(config, config.batch_size, num_classes, mesh)
  return config, ts, model, num_classes, batch, jax.eval_shape(jax.random.key, 0)


def compile_part(config, devices, per_chip_batch, what, options):
  """(lower seconds, compile seconds) of a part of the train step: forward, grad or optimizer."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from mvit_jax.data import device_preprocess  # pylint: disable=g-import-not-at-top
  config, ts, model, num_classes, batch, rng = _abstract_training_inputs(config, devices, per_chip_batch)

  def loss(params, batch, rng):  # As trainer.make_train_step's loss_fn, single-label.
    erase_rng, mix_rng, dropout_rng = jax.random.split(rng, 3)
    videos = device_preprocess.preprocess_on_device(batch['video'], erase_rng, config.data, train=True)
    videos, targets = trainer.make_targets(mix_rng, videos, batch['label'], config.data, num_classes)
    logits = model.apply({'params': params}, videos, train=True, rngs={'dropout': dropout_rng})
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()

  replicated = jax.NamedSharding(ts.mesh, jax.P())
  shardings = ts.state_shardings()
  if what == 'forward':
    fn, args = jax.jit(loss), (ts.abstract_params, batch, rng)
  elif what == 'grad':
    fn = jax.jit(jax.value_and_grad(loss), out_shardings=(replicated, shardings['params']))
    args = (ts.abstract_params, batch, rng)
  elif what == 'optimizer':
    def update(params, opt_state, grads):
      updates, opt_state = ts.tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state
    fn = jax.jit(update, donate_argnums=(0, 1), out_shardings=(shardings['params'], shardings['opt_state']))
    args = (ts.abstract_params, ts.abstract_opt_state, ts.abstract_params)
  else:
    raise app.UsageError(f'unknown --what {what!r}')
  start = time.perf_counter()
  with ts.context():
    lowered = fn.lower(*args)
  lowered_at = time.perf_counter()
  cpu = time.process_time()
  lowered.compile(options)
  return lowered_at - start, time.perf_counter() - lowered_at, time.process_time() - cpu


# --- Single ops on one chip, MViT-B 16x4 shapes (B clips per chip) ----------------------------------------------
def _ops(batch: int):
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  dn = ('NTHWC', 'THWIO', 'NTHWC')

  def stem(x, w):  # PatchEmbed: 3x7x7 kernel, stride 2x4x4, padding 1x3x3, 3 -> 96 channels.
    return lax.conv_general_dilated(x, w, (2, 4, 4), [(1, 1), (3, 3), (3, 3)], dimension_numbers=dn)

  def stem_s2d(x, w):
    """The same convolution after space-to-depth: the padded input split by stride phase into 2*4*4*3 = 96
    channels, the kernel zero-padded to 4x8x8 and split alike into a 2x2x2 stride-1 kernel."""
    b, t, h, wd, c = x.shape
    to, ho, wo = (t + 2 - 3) // 2 + 1, (h + 6 - 7) // 4 + 1, (wd + 6 - 7) // 4 + 1
    x = jnp.pad(x, [(0, 0), (1, 2 * to + 2 - t - 1), (3, 4 * ho + 4 - h - 3), (3, 4 * wo + 4 - wd - 3), (0, 0)])
    x = x.reshape(b, to + 1, 2, ho + 1, 4, wo + 1, 4, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    x = x.reshape(b, to + 1, ho + 1, wo + 1, 32 * c)
    wp = jnp.pad(w, [(0, 1), (0, 1), (0, 1), (0, 0), (0, 0)])
    wp = wp.reshape(2, 2, 2, 4, 2, 4, c, -1).transpose(0, 2, 4, 1, 3, 5, 6, 7).reshape(2, 2, 2, 32 * c, -1)
    return lax.conv_general_dilated(x, wp, (1, 1, 1), 'VALID', dimension_numbers=dn)

  def stem_patches(x, w):
    """im2col: the patches of the input (which needs no gradient) times the kernel; its gradient is a matmul."""
    patches = lax.conv_general_dilated_patches(lax.stop_gradient(x), (3, 7, 7), (2, 4, 4),
                                               [(1, 1), (3, 3), (3, 3)], dimension_numbers=dn)
    return patches @ w.transpose(3, 0, 1, 2, 4).reshape(-1, w.shape[-1])

  def depthwise(stride):
    return lambda x, w: lax.conv_general_dilated(x, w, stride, [(1, 1)] * 3, dimension_numbers=dn,
                                                 feature_group_count=x.shape[-1])

  def kernel_grad(f):
    return lambda x, w, ct: jax.vjp(lambda w: f(x, w), w)[1](ct)[0]

  def both_grads(f):
    return lambda x, w, ct: jax.vjp(f, x, w)[1](ct)

  bf16 = jnp.bfloat16
  stem_args = ((batch, 16, 224, 224, 3), (3, 7, 7, 3, 96), (batch, 8, 56, 56, 96))
  tiny_stem_args = ((batch, 8, 48, 48, 3), (3, 7, 7, 3, 32), (batch, 4, 12, 12, 32))  # mvit_tiny, demo clips.
  ops = {}
  for name, f in (('stem', stem), ('stem_s2d', stem_s2d), ('stem_patches', stem_patches)):
    ops[f'{name}_fwd'] = (f, stem_args[:2], bf16)
    ops[f'{name}_kgrad'] = (kernel_grad(f), stem_args, bf16)
    ops[f'tiny_{name}_kgrad'] = (kernel_grad(f), tiny_stem_args, bf16)
  # Depthwise 3x3x3 pooling convolutions of MViT-B stage 1 (1 head of 96 channels; heads fold into the batch).
  for name, shape, stride in (('dw_s122', (batch, 8, 56, 56, 96), (1, 2, 2)),
                              ('dw_s188', (batch, 8, 56, 56, 96), (1, 8, 8)),
                              ('dw_s111', (8 * batch, 8, 7, 7, 96), (1, 1, 1))):
    out = tuple((n - 1) // s + 1 for n, s in zip(shape[1:4], stride))
    args = (shape, (3, 3, 3, 1, shape[-1]), (shape[0], *out, shape[-1]))
    ops[f'{name}_fwd'] = (depthwise(stride), args[:2], bf16)
    ops[f'{name}_bwd'] = (both_grads(depthwise(stride)), args, bf16)
    ops[f'{name}_kgrad'] = (kernel_grad(depthwise(stride)), args, bf16)
  # The MLP of a stage-1 block (25088 tokens per clip, 96 -> 384 -> 96), forward and backward, with and without
  # the GELU between the two dense layers.
  tokens = (batch, 8 * 56 * 56)
  def mlp(x, w1, w2):
    return jax.nn.gelu(x @ w1) @ w2
  def linear(x, w1):
    return x @ w1
  mlp_args = ((*tokens, 96), (96, 384), (384, 96))
  ops['mlp_fwd'] = (mlp, mlp_args, bf16)
  ops['mlp_bwd'] = (lambda x, w1, w2: jax.grad(lambda *a: mlp(*a).astype(jnp.float32).sum(), (0, 1, 2))(x, w1, w2),
                    mlp_args, bf16)
  ops['dense_fwd'] = (linear, mlp_args[:2], bf16)
  ops['dense_bwd'] = (lambda x, w1: jax.grad(lambda *a: linear(*a).astype(jnp.float32).sum(), (0, 1))(x, w1),
                      mlp_args[:2], bf16)
  # The same MLP with the model's exact (erf) GELU and its hand-written derivative, and with that GELU kept out of
  # the matmul fusions (optimization_barrier: a separate elementwise kernel, one more round trip through HBM).
  from mvit_jax.models import ops as model_ops  # pylint: disable=g-import-not-at-top
  def mlp_erf(x, w1, w2):
    return model_ops.gelu(x @ w1) @ w2
  def mlp_erf_unfused(x, w1, w2):
    h = lax.optimization_barrier(x @ w1)
    return lax.optimization_barrier(model_ops.gelu(h)) @ w2
  for name, f in (('mlp_erf', mlp_erf), ('mlp_erf_unfused', mlp_erf_unfused)):
    ops[f'{name}_bwd'] = (lambda x, w1, w2, f=f: jax.grad(lambda *a: f(*a).astype(jnp.float32).sum(), (0, 1, 2))(
        x, w1, w2), mlp_args, bf16)
  return ops


def compile_op(name, devices, batch, options):
  import jax  # pylint: disable=g-import-not-at-top
  ops = _ops(batch)
  if name not in ops:
    raise app.UsageError(f'unknown op {name!r}; one of {sorted(ops)}')
  fn, shapes, dtype = ops[name]
  sharding = jax.sharding.SingleDeviceSharding(devices[0])
  args = [jax.ShapeDtypeStruct(s, dtype, sharding=sharding) for s in shapes]
  start = time.perf_counter()
  lowered = jax.jit(fn).lower(*args)
  lowered_at = time.perf_counter()
  cpu = time.process_time()
  lowered.compile(options)
  return lowered_at - start, time.perf_counter() - lowered_at, time.process_time() - cpu


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_platforms', 'cpu')
  devices = aot.topology_devices(FLAGS.topology)
  options = aot.parse_compiler_options(FLAGS.compiler_option)
  what, batch = _WHAT.value, FLAGS.per_chip_batch or 8
  if what == 'step':
    cpu = time.process_time()
    report = aot.compile_train_step(FLAGS.config, devices, batch, options)
    print(aot.format_report(report))
    print(f'  process CPU time {time.process_time() - cpu:.1f} s (shapes, lowering and compile)')
  else:
    if what.startswith('op:'):
      lower_s, compile_s, cpu_s = compile_op(what[3:], devices, batch, options)
    else:
      lower_s, compile_s, cpu_s = compile_part(FLAGS.config, devices, batch, what, options)
    print(f'{what}: lowering {lower_s:.1f} s, compile {compile_s:.1f} s wall, {cpu_s:.1f} s CPU '
          f'(per-chip batch {batch})')
  print('libtpu log:')
  print('\n'.join(libtpu_log_summary(os.getpid())), flush=True)


if __name__ == '__main__':
  flags.FLAGS.set_default('topology', 'v5e:2x2')
  app.run(main)
