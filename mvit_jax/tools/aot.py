r"""Compiles the trainer's train step for a TPU slice ahead of time, on a machine without a TPU.

  python -m mvit_jax.aot --config experiments/k400_mvit_b.py --topology v5e:2x2 --per_chip_batch 8 \
      [--find_max_batch] [--config.KEY=VALUE ...] [--compiler_option=KEY=VALUE ...]

Needs libtpu (`pip install -e '.[tpu]'`): its compile-only client turns a topology name (v5e:2x2, v5e:4x4,
v5p:2x2x1, v4:2x2x1, v6e:2x2, ...) into TPU devices this host can compile for. The compiled step is exactly the
one `mvit_jax.main` runs: `trainer.make_train_step` with the config's optimizer, the shapes and shardings of
`trainer.TrainSetup` (mesh from config.mesh over the topology's chips, FSDP included) and `TrainSetup.jit_step`'s
in/out shardings and donation; the batch is what the loader yields (uint8 clips; for an AVA config, the detector's
step on clips, data.ava_max_boxes boxes per clip and their multi-hot labels).
The global batch is per_chip_batch x chips (default: config.batch_size / chips).

Prints the lowering and compile seconds, the StableHLO size, per-chip HBM from XLA's memory analysis (arguments,
outputs, temporaries; total = arguments + outputs - aliased (donated) + temporaries + code) against the chip's
HBM, and XLA's FLOP count per chip and step. --find_max_batch then searches the largest per-chip batch that fits,
without and with rematerialisation (config.remat_policy '' and 'full'): doubling from the given batch until a
compile does not fit, then bisection between the last fit and the first miss.

`JAX_OPTIMIZATION_LEVEL=O0` (or --compiler_option=exec_time_optimization_effort=-1) compiles several times
faster with less optimised TPU code: enough to check shapes and memory, not to train. libtpu logs its stage times
to /tmp/tpu_logs; docs/tpu_compile.md gives the measured compile times and where they go.

Exit status: 2 for bad input (one line on stderr: unknown topology, batch not divisible, mesh not matching the
chip count, bad config key), 1 when the step does not fit in HBM.
"""
from collections.abc import Mapping, Sequence
import dataclasses
import math
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from mvit_jax.system.errors import InputError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (experiments/*.py).',
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string('topology', None, 'TPU topology name, e.g. v5e:2x2, v5p:2x2x1, v4:2x2x1, v6e:2x2.')
_PER_CHIP_BATCH = flags.DEFINE_integer('per_chip_batch', None, 'Clips per chip (default: config.batch_size / chips).')
_FIND_MAX_BATCH = flags.DEFINE_bool('find_max_batch', False,
                                    "Also search the largest per-chip batch that fits, remat_policy '' and 'full'.")
_COMPILER_OPTIONS = flags.DEFINE_multi_string('compiler_option', [], 'XLA compiler option KEY=VALUE (repeatable).')
flags.mark_flags_as_required(['config', 'topology'])

GiB = 1 << 30
# HBM per chip (Cloud TPU docs: v4 32 GiB, v5e 16 GB, v5p 95 GB, v6e 32 GB; JAX reports them as GiB).
HBM_GIB = {'v4': 32, 'v5e': 16, 'v5p': 95, 'v6e': 32}
_GENERATION = {'TPU v4': 'v4', 'TPU v5 lite': 'v5e', 'TPU v5e': 'v5e', 'TPU v5': 'v5p', 'TPU v5p': 'v5p',
               'TPU v6 lite': 'v6e', 'TPU v6e': 'v6e'}
# TPU_ACCELERATOR_TYPE for a topology's generation (libtpu then skips probing for one): name-{count}.
_ACCELERATOR = {'v4': ('v4', 2), 'v5e': ('v5litepod', 1), 'v5p': ('v5p', 2), 'v6e': ('v6e', 1)}


class BadInput(InputError):
  """The command line asks for something impossible (exit status 2)."""


class DoesNotFit(RuntimeError):
  """XLA could not fit the step into the chip's HBM."""


@dataclasses.dataclass
class Report:
  per_chip_batch: int
  chips: int
  device_kind: str
  mesh: dict
  lower_s: float
  compile_s: float
  stablehlo: str
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  flops: float              # Per chip and step (XLA cost analysis of the partitioned program).
  hbm_bytes: int | None     # The chip's HBM; None for an unknown generation.
  scanned_blocks: bool = False  # The model runs blocks in a loop (its FLOPs then count the loop body once).

  @property
  def total_bytes(self) -> int:
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

  @property
  def fits(self) -> bool:
    return self.hbm_bytes is None or self.total_bytes <= self.hbm_bytes


def _chips(name: str) -> int:
  dims = name.partition(':')[2].split('x')
  return math.prod(int(d) for d in dims) if all(d.isdigit() for d in dims) else 0


def set_tpu_environment(topology: str) -> None:
  """libtpu's start-up settings for a compile-only client (before the first libtpu call): no worker probing, and
  no claim on /tmp/libtpu_lockfile (which would stop a second compile, or a trainer, from loading libtpu)."""
  gen = topology.split(':')[0]
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  name, cores = _ACCELERATOR.get(gen, _ACCELERATOR['v5e'])  # Any valid type silences it; a matching one is tidier.
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', f'{name}-{cores * (_chips(topology) or 4)}')


def topology_devices(topology: str) -> list:
  """Compile-only devices of a TPU topology, one per chip (v4 as megacore, as JAX runs it on a v4 VM)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  set_tpu_environment(topology)
  kwargs = {'chip_config_name': 'megacore'} if topology.startswith('v4:') else {}
  try:
    return list(topologies.get_topology_desc(platform='tpu', topology_name=topology, **kwargs).devices)
  except (jax.errors.JaxRuntimeError, RuntimeError, ValueError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise BadInput(f'unknown TPU topology {topology!r} (e.g. v5e:2x2, v5p:2x2x1, v4:2x2x1, v6e:2x2): {reason}') from e


def hbm_bytes(device_kind: str) -> int | None:
  gen = _GENERATION.get(device_kind)
  return HBM_GIB[gen] * GiB if gen else None


def default_per_chip_batch(config, chips: int) -> int:
  if config.batch_size % chips:
    raise BadInput(f'config.batch_size {config.batch_size} is not divisible by {chips} chips; pass --per_chip_batch')
  return config.batch_size // chips


def check_inputs(config, devices: Sequence, per_chip_batch: int):
  """(config with batch_size = the global batch, mesh); BadInput when they do not fit together."""
  from mvit_jax.train import config as config_lib  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.batch_size = per_chip_batch * len(devices)  # The LR scaling then matches a run at this batch.
  if per_chip_batch < 1 or config.batch_size % config.data.num_repeated_samples:
    raise BadInput(f'global batch {config.batch_size} (per-chip {per_chip_batch} x {len(devices)} chips) must be '
                   f'a positive multiple of data.num_repeated_samples {config.data.num_repeated_samples}')
  try:
    config_lib.validate(config)
    return config, sharding_lib.make_mesh(config.mesh, devices)
  except ValueError as e:
    raise BadInput(str(e)) from e


def compile_train_step(config, devices: Sequence, per_chip_batch: int,
                       compiler_options: Mapping[str, str] | None = None) -> Report:
  """Lowers and compiles mvit_jax.main's train step for `devices` at per_chip_batch clips per device."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from mvit_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from mvit_jax.data import sources  # pylint: disable=g-import-not-at-top

  config, mesh = check_inputs(config, devices, per_chip_batch)
  num_classes = sources.num_classes_from_config(config.data)
  model, _ = trainer.make_model(config, num_classes)
  ts = trainer.TrainSetup.build(model, config, mesh, sharding_lib.rules_from_config(config.sharding_rules))
  step_fn = ts.jit_step(trainer.make_train_step(model, ts.tx, ts.schedule, config, num_classes))
  args = ({'params': ts.abstract_params, 'opt_state': ts.abstract_opt_state},
          trainer.abstract_train_batch(config, config.batch_size, num_classes, mesh),
          jax.eval_shape(jax.random.key, 0), jax.ShapeDtypeStruct((), jnp.int32))
  start = time.perf_counter()
  with ts.context():
    lowered = step_fn.lower(*args)
  lowered_at = time.perf_counter()
  try:
    compiled = lowered.compile(dict(compiler_options or {}))
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' in str(e):
      raise DoesNotFit(str(e).strip().splitlines()[0]) from e
    raise
  compiled_at = time.perf_counter()
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # jax < 0.4.36 returned one dict per program.
  return Report(per_chip_batch=per_chip_batch, chips=len(devices), device_kind=devices[0].device_kind,
                mesh=dict(mesh.shape), lower_s=lowered_at - start, compile_s=compiled_at - lowered_at,
                stablehlo=lowered.as_text(), argument_bytes=mem.argument_size_in_bytes,
                output_bytes=mem.output_size_in_bytes, alias_bytes=mem.alias_size_in_bytes,
                temp_bytes=mem.temp_size_in_bytes, code_bytes=mem.generated_code_size_in_bytes,
                flops=float(cost.get('flops', 0.0)), hbm_bytes=hbm_bytes(devices[0].device_kind),
                scanned_blocks=_scans_blocks(model))


def _scans_blocks(model) -> bool:
  """True when the model runs two or more blocks as one loop (nn.scan)."""
  from mvit_jax.models import config as model_config  # pylint: disable=g-import-not-at-top
  cfg = getattr(model, 'config', None)
  return bool(getattr(cfg, 'scan_blocks', False)) and any(
      last > first for first, last in model_config.block_groups(cfg))


def format_report(r: Report) -> str:
  gib = lambda n: f'{n / GiB:.2f} GiB'
  hbm = f'{gib(r.hbm_bytes)} ({100 * r.total_bytes / r.hbm_bytes:.0f}%)' if r.hbm_bytes else '? (unknown chip)'
  mesh = ' '.join(f'{k}={v}' for k, v in r.mesh.items())
  return '\n'.join([
      f'{r.chips} x {r.device_kind}, mesh {mesh}, per-chip batch {r.per_chip_batch} '
      f'(global {r.per_chip_batch * r.chips})',
      f'  lowering      {r.lower_s:8.1f} s',
      f'  compile       {r.compile_s:8.1f} s',
      f'  StableHLO     {r.stablehlo.count(chr(10)) + 1:,} lines, {len(r.stablehlo.encode()):,} bytes',
      f'  HBM per chip  arguments {gib(r.argument_bytes)}, outputs {gib(r.output_bytes)} (aliased '
      f'{gib(r.alias_bytes)}), temporaries {gib(r.temp_bytes)}, code {gib(r.code_bytes)}',
      f'                total {gib(r.total_bytes)} of {hbm}',
      f'  FLOPs         {r.flops / 1e12:.3f} TFLOP per chip per step ({r.flops * r.chips / 1e12:.2f} in all)'
      + ('\n                too low: XLA counts the scanned blocks\' loop body once (model.scan_blocks=False '
         'counts all)' if r.scanned_blocks else '')])


def find_max_batch(config, devices, start: int, compiler_options=None, log=print) -> tuple[int, Report | None]:
  """Largest per-chip batch whose step fits in HBM: doubling from `start` (halving while it does not fit), then
  bisection. Returns (batch, its report); (0, None) when not even one clip fits."""
  start = max(start, 1)

  def probe(batch):
    try:
      report = compile_train_step(config, devices, batch, compiler_options)
    except DoesNotFit as e:
      log(f'    batch {batch:4d}: does not fit ({e})')
      return None
    log(f'    batch {batch:4d}: {report.total_bytes / GiB:6.2f} GiB, {"fits" if report.fits else "does not fit"} '
        f'(compile {report.compile_s:.0f} s)')
    return report if report.fits else None

  reports = {}

  def fits(batch):
    if batch not in reports:
      reports[batch] = probe(batch)
    return reports[batch] is not None

  if fits(start):
    lo = start
    while fits(2 * lo):
      lo *= 2
    hi = 2 * lo
  else:
    hi = start
    while hi > 1 and not fits(hi // 2):
      hi //= 2
    lo = hi // 2
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo, reports.get(lo)


def parse_compiler_options(items: Sequence[str]) -> dict:
  """KEY=VALUE strings -> compiler_options; numbers become numbers (exec_time_optimization_effort=-1)."""
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep:
      raise BadInput(f'--compiler_option needs KEY=VALUE, got {item!r}')
    for kind in (int, float):
      try:
        value = kind(value)
        break
      except ValueError:
        pass
    out[key] = value
  return out


def run(config, topology: str, per_chip_batch: int | None, find_max: bool, options: Mapping[str, str]) -> int:
  devices = topology_devices(topology)
  batch = default_per_chip_batch(config, len(devices)) if per_chip_batch is None else per_chip_batch
  check_inputs(config, devices, batch)
  print(f'{config.model.name} train step for {topology}, remat_policy {config.remat_policy!r}', flush=True)
  status = 0
  try:
    report = compile_train_step(config, devices, batch, options)
    print(format_report(report), flush=True)
    if not report.fits:
      print('  does not fit in HBM', flush=True)
      status = 1
  except DoesNotFit as e:
    print(f'  does not fit in HBM at per-chip batch {batch}: {e}', flush=True)
    status = 1
  if find_max:
    for policy in ('', 'full'):
      c = config.copy_and_resolve_references()
      c.remat_policy = policy
      print(f'Largest per-chip batch, remat_policy {policy!r} (doubling from {batch}, then bisection):', flush=True)
      best, _ = find_max_batch(c, devices, batch, options, log=lambda line: print(line, flush=True))
      print(f'  -> {best} clips per chip (global {best * len(devices)})', flush=True)
  return status


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_platforms', 'cpu')  # Shapes on the host CPU; only the TPU compile-only client compiles.
  sys.exit(run(_CONFIG.value, _TOPOLOGY.value, _PER_CHIP_BATCH.value, _FIND_MAX_BATCH.value,
               parse_compiler_options(_COMPILER_OPTIONS.value)))

