"""Metric writing through clu (TensorBoard event files + console), progress/profiling hooks, the parameter
overview, and the non-finite guard.

clu's TensorBoard writer imports tensorflow: this module imports clu's writers lazily, after torchvision if the
process uses it (tensorflow-then-torchvision segfaults).
"""
from collections.abc import Mapping, Sequence
import math
import os
import shutil
import tempfile

import jax
import numpy as np

from mvit_jax.system import storage


class NonFiniteError(RuntimeError):
  """Loss or gradient norm became NaN/Inf; the run stops without saving the bad state."""


def create_writer(workdir: str):
  """TensorBoard + logging writer on process 0; logging only elsewhere (clu create_default_writer). For a bucket
  workdir the event files are written locally and copied there on every flush and at close (MirroredWriter)."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports tensorflow)
  if jax.process_index() > 0 or not storage.is_url(workdir):
    return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0, asynchronous=True)
  mirror = LocalMirror(workdir)
  return MirroredWriter(metric_writers.create_default_writer(mirror.local, asynchronous=True), mirror)


class LocalMirror:
  """A local temporary folder whose new or changed files `sync()` copies to the same relative paths under `remote`.

  TensorBoard event files and profiles are written by TensorFlow's and XLA's own file clients, which append to the
  files as they go: a bucket object cannot be appended to, and those clients do not share our storage settings
  (retries, endpoint). So they write locally and the files are copied whole.
  """

  def __init__(self, remote: str):
    self.remote = remote
    self.local = tempfile.mkdtemp(prefix='mvit_jax-events-')
    self._copied = {}  # Relative path -> (size, mtime) when copied.

  def sync(self) -> None:
    for rel in storage.files_under(self.local):
      stat = os.stat(os.path.join(self.local, rel))
      if self._copied.get(rel) != (stat.st_size, stat.st_mtime_ns):
        storage.copy_file(os.path.join(self.local, rel), storage.join(self.remote, rel))
        self._copied[rel] = (stat.st_size, stat.st_mtime_ns)

  def close(self, *, copy: bool = True) -> None:
    try:
      if copy:
        self.sync()
    finally:
      shutil.rmtree(self.local, ignore_errors=True)


class MirroredWriter:
  """A clu MetricWriter over a LocalMirror's folder: flush() and close() also copy the files to the workdir."""

  def __init__(self, writer, mirror: LocalMirror):
    self._writer = writer
    self.mirror = mirror
    self._copy_failed = False  # Then the store is down (after the client's retries): close does not wait again.

  def __getattr__(self, name):  # write_scalars, write_images, ...: the wrapped writer's.
    return getattr(self._writer, name)

  def flush(self) -> None:
    self._writer.flush()
    try:
      self.mirror.sync()
    except OSError:
      self._copy_failed = True
      raise

  def close(self) -> None:
    try:
      self._writer.close()
    finally:
      self.mirror.close(copy=not self._copy_failed)


def progress_hooks(workdir: str, writer, num_train_steps: int, *, log_every_steps: int,
                   profile_steps: int = 0) -> list:
  """clu ReportProgress (steps/s, ETA) and, when profile_steps > 0, a Profile of that many steps on process 0 (for
  a bucket workdir, into the writer's local mirror, copied with the event files)."""
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  hooks = [periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=writer,
                                           every_steps=log_every_steps, every_secs=None)]
  if profile_steps > 0 and jax.process_index() == 0:
    logdir = writer.mirror.local if isinstance(writer, MirroredWriter) else workdir
    hooks.append(periodic_actions.Profile(logdir=logdir, num_profile_steps=profile_steps, first_profile=10,
                                          every_steps=None, every_secs=None))
  return hooks


def log_parameter_overview(params) -> int:
  """Logs a table of parameter shapes and returns the parameter count."""
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top
  parameter_overview.log_parameter_overview(params, include_stats=False)
  return parameter_overview.count_parameters(params)


def average(step_metrics: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
  """Averages per-step host scalar metrics (from jax.device_get) over the steps."""
  return {k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]}


def check_finite(step_metrics: Sequence[Mapping[str, np.ndarray]], first_step: int) -> None:
  """Raises NonFiniteError naming the first step whose loss or grad_norm is NaN/Inf.

  `step_metrics[i]` belongs to step `first_step + i`.
  """
  for i, m in enumerate(step_metrics):
    bad = {k: float(m[k]) for k in ('loss', 'grad_norm') if not math.isfinite(float(m[k]))}
    if bad:
      raise NonFiniteError(
          f'Non-finite training metrics at step {first_step + i}: {bad}. Stopping without saving this state; the '
          'last checkpoint in the workdir holds the last good state. Lower the learning rate, enable gradient '
          'clipping or use float32 (half_precision=False).')
