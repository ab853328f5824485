r"""Entry point: `python -m mvit_jax.main --config experiments/<name>.py --workdir DIR [--config.KEY=VALUE ...]`.

Multi-host: on a Cloud TPU VM pod slice run the same command on every worker with `--distributed` (JAX detects
the coordinator and process ids); on a GPU cluster pass `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` (or `--distributed` under SLURM/Open MPI, which JAX also detects).

Bad input (an unknown config key, a wrong type, an unknown model, a missing data file or folder, a workdir this
process cannot write) stops the run before JAX starts, with one line on stderr and exit status 2.
"""
import logging as pylogging

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from mvit_jax.system import cli
from mvit_jax.system import storage
from mvit_jax.train import config as config_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (experiments/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, TensorBoard events, metrics.json.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'Call jax.distributed.initialize() with cluster auto-detection (TPU pods, SLURM).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (GPU clusters).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process id (with --coordinator_address).')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietOrbax(pylogging.Filter):
  """Drops orbax's per-save INFO lines (dozens per checkpoint); its warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or '/orbax/' not in record.pathname


def initialize_distributed() -> None:
  """jax.distributed.initialize from the flags; must run before any JAX computation."""
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  workdir = storage.resolve(_WORKDIR.value)  # A local folder or a bucket URL (gs://...).
  # train_and_evaluate validates too (for callers from Python); here bad input fails before any log line and
  # before JAX starts, so the CLI prints one line.
  config_lib.validate(config)
  config_lib.check_paths(config, workdir)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  initialize_distributed()
  logging.info('Process %d of %d, %d local devices: %s', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.local_devices())
  from mvit_jax.train import trainer  # pylint: disable=g-import-not-at-top  (flax, grain, orbax: after the input checks)
  logging.info('Compilation cache: %s', trainer.use_compilation_cache(config.compilation_cache_dir, workdir) or 'off')
  try:
    result = trainer.train_and_evaluate(config, workdir)
  except OSError as e:  # gcsfs and orbax raise OSErrors once their retries with backoff are spent.
    if not storage.is_url(workdir):
      raise
    raise storage.StoreError(f'{workdir}: {storage.describe_error(e)}') from e
  logging.info('Done: %s', result)


if __name__ == '__main__':
  cli.run(main)
