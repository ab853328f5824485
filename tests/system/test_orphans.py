"""No orphans: a trainer or scan killed with SIGKILL (an OOM kill, a preemption) takes every process it started
with it, and leaves no shared memory in /dev/shm.

Each run gets a unique MVIT_TEST_RUN_ID in its environment, which every process it starts inherits, so the test
finds them all by walking /proc/*/environ. Other programs on the machine may create /dev/shm entries meanwhile;
an entry counts as leaked when it is new and no live process maps or holds it open (all of the run's processes
are gone by then).
"""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests import testlib

REPO = testlib.REPO
SHM_DIR = '/dev/shm'
GRACE_SECONDS = 10  # The bound on how long a killed run's processes may outlive it.
START_TIMEOUT_SECONDS = 600  # The trainer compiles before its loader starts; slow on a busy 2-core machine.

# Every test here starts processes.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc and /dev/shm')]


def _pids() -> list[int]:
  return [int(name) for name in os.listdir('/proc') if name.isdigit()]


def _read(path: str) -> bytes:
  """The file's bytes, or b'' when its process is gone or not ours to read."""
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError:
    return b''


def _run_processes(run_id: str) -> dict[int, str]:
  """pid -> command line of every live process whose environment carries MVIT_TEST_RUN_ID=run_id."""
  marker = f'MVIT_TEST_RUN_ID={run_id}'.encode()
  found = {}
  for pid in _pids():
    if marker in _read(f'/proc/{pid}/environ').split(b'\0'):
      found[pid] = _read(f'/proc/{pid}/cmdline').replace(b'\0', b' ').decode(errors='replace')
  return found


def _shm_held_by(pids) -> set[str]:
  """Names of /dev/shm entries that the processes map or hold open."""
  names = set()
  for pid in pids:
    for line in _read(f'/proc/{pid}/maps').decode(errors='replace').splitlines():
      fields = line.split(maxsplit=5)
      if len(fields) == 6 and fields[5].startswith(SHM_DIR + '/'):
        names.add(fields[5][len(SHM_DIR) + 1:].removesuffix(' (deleted)'))
    try:
      fds = os.listdir(f'/proc/{pid}/fd')
    except OSError:
      continue
    for fd in fds:
      try:
        target = os.readlink(f'/proc/{pid}/fd/{fd}')
      except OSError:
        continue
      if target.startswith(SHM_DIR + '/'):
        names.add(target[len(SHM_DIR) + 1:])
  return names


def _leaked_shm(before: set[str]) -> set[str]:
  unheld = set(os.listdir(SHM_DIR)) - before - _shm_held_by(_pids())
  return {name for name in unheld if os.path.exists(os.path.join(SHM_DIR, name))}  # Not unlinked meanwhile.


def _start(run_id: str, args: list[str], log_path, **env_overrides) -> subprocess.Popen:
  env = testlib.subprocess_env(os.path.join(os.path.dirname(log_path), 'jax_cache'))
  env.update(MVIT_TEST_RUN_ID=run_id, **env_overrides)
  with open(log_path, 'w') as log:
    return subprocess.Popen([sys.executable, '-m', *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for(condition, proc: subprocess.Popen, log_path, what: str, timeout: float = START_TIMEOUT_SECONDS):
  deadline = time.monotonic() + timeout
  while not condition():
    if proc.poll() is not None:
      raise AssertionError(f'exited with {proc.returncode} before {what}:\n{_tail(log_path)}')
    if time.monotonic() > deadline:
      raise AssertionError(f'no {what} after {timeout} s:\n{_tail(log_path)}')
    time.sleep(0.1)


def _tail(log_path) -> str:
  with open(log_path, errors='replace') as f:
    return f.read()[-3000:]


def _kill_and_check(proc: subprocess.Popen, run_id: str, shm_before: set[str]) -> None:
  """SIGKILLs the run's main process; then within GRACE_SECONDS all its processes must be gone and no new
  /dev/shm entry may be left."""
  proc.kill()
  proc.wait()
  _wait_until_gone(run_id)
  survivors = _run_processes(run_id)
  leaked = _leaked_shm(shm_before)
  assert not survivors, f'{len(survivors)} processes outlived the killed run by {GRACE_SECONDS} s: {survivors}'
  assert not leaked, f'the killed run left {sorted(leaked)} in {SHM_DIR}'


def _wait_until_gone(run_id: str) -> None:
  deadline = time.monotonic() + GRACE_SECONDS
  while _run_processes(run_id) and time.monotonic() < deadline:
    time.sleep(0.2)


def _end_run(run_id: str) -> None:
  """Kills what a failed check left behind, so that no test leaves orphans itself: the resource tracker last, after
  it had the time to unlink the shared memory registered with it (it does once the others are gone)."""
  for pid, cmdline in _run_processes(run_id).items():
    if 'resource_tracker' not in cmdline:
      _kill(pid)
  _wait_until_gone(run_id)
  for pid in _run_processes(run_id):
    _kill(pid)


def _kill(pid: int) -> None:
  try:
    os.kill(pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def _demo_command(workdir: str, *overrides: str) -> list[str]:
  return ['mvit_jax.main', '--config=experiments/demo.py', f'--workdir={workdir}', *overrides]


def _workers(run_id: str) -> list[int]:
  """pids of the run's multiprocessing workers (spawned children, the resource tracker excluded)."""
  return [pid for pid, cmdline in _run_processes(run_id).items() if 'spawn_main' in cmdline]


_PARENT = """
import multiprocessing, os, sys, time
from mvit_jax.system import process_lifetime

def child(folder):
  process_lifetime.exit_with_parent(on_exit=lambda: open(os.path.join(folder, 'on_exit_ran'), 'w').close())
  open(os.path.join(folder, 'child_ready'), 'w').close()
  time.sleep(3600)

if __name__ == '__main__':
  process = multiprocessing.get_context('spawn').Process(target=child, args=(sys.argv[1],))
  process.start()
  print(process.pid, flush=True)
  time.sleep(3600)
"""


def _alive(pid: int) -> bool:
  """Running, not a zombie that nobody has reaped yet."""
  stat = _read(f'/proc/{pid}/stat').decode()
  return bool(stat) and stat.rsplit(')', 1)[1].split()[0] != 'Z'


def test_exit_with_parent_ends_the_child_of_a_killed_parent(tmp_path):
  script = tmp_path / 'parent.py'  # A file, not `python -c`: spawn imports the child's function from it.
  script.write_text(_PARENT)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            text=True)
  child_pid = int(parent.stdout.readline())
  try:
    _wait_for(lambda: os.path.exists(tmp_path / 'child_ready'), parent, os.devnull, 'the child watching its parent',
              timeout=60)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + GRACE_SECONDS
    while _alive(child_pid) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not _alive(child_pid)
    assert os.path.exists(tmp_path / 'on_exit_ran')
  finally:
    if _alive(child_pid):
      _kill(child_pid)


def test_spawned_child_ends_with_its_parent_while_it_still_imports():
  """A spawned worker whose parent dies before the worker's init function runs: importing mvit_jax (the first
  thing its parent's main module does) starts the watch. The same process without spawn's argv outlives it."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  children = {}
  for spawned in (True, False):
    argv = f'"{sys.executable}" -c "import mvit_jax, time; time.sleep(120)"' + (' --multiprocessing-fork' if spawned
                                                                               else '')
    # bash starts the child and exits one second later, as a parent killed during the child's imports.
    parent = subprocess.run(['bash', '-c', f'{argv} >/dev/null 2>&1 & echo $!; sleep 1'], env=env, check=True,
                            stdout=subprocess.PIPE, text=True)
    children[spawned] = int(parent.stdout.split()[0])
  try:
    deadline = time.monotonic() + GRACE_SECONDS
    while _alive(children[True]) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert not _alive(children[True])
    assert _alive(children[False])
  finally:
    for pid in children.values():
      if _alive(pid):
        _kill(pid)


def test_kill_while_writing_synthetic_data(tmp_path):
  # The trainer writes the videos in its own process; this holds that stage to the same rule.
  run_id, workdir, log_path = uuid.uuid4().hex, str(tmp_path / 'run'), str(tmp_path / 'log.txt')
  shm_before = set(os.listdir(SHM_DIR))
  tmp = tmp_path / 'tmp'  # trainer.prepare_synthetic_data writes into a temporary folder, then copies.
  tmp.mkdir()
  proc = _start(run_id, _demo_command(workdir), log_path, TMPDIR=str(tmp))
  try:
    _wait_for(lambda: list(tmp.glob('*/videos/*.mp4')), proc, log_path, 'a synthetic video')
    _kill_and_check(proc, run_id, shm_before)
    assert not os.path.exists(os.path.join(workdir, 'synthetic_data', 'classes.txt')), 'the data was complete'
  finally:
    _end_run(run_id)


def test_kill_while_training_with_two_loader_workers(tmp_path):
  run_id, workdir, log_path = uuid.uuid4().hex, str(tmp_path / 'run'), str(tmp_path / 'log.txt')
  shm_before = set(os.listdir(SHM_DIR))
  proc = _start(run_id, _demo_command(
      workdir, '--config.synthetic_data.videos_per_class=4', '--config.data.num_workers=2',
      '--config.model.pool_impl=conv', '--config.num_train_steps=100000'), log_path)
  try:
    # The workers start at the training loop's first batch; a batch block (psm_*, not one of the semaphores they
    # map from the start) proves they are through their start-up and deliver.
    def workers_deliver():
      workers = _workers(run_id)
      return len(workers) == 2 and any(name.startswith('psm_') for name in _shm_held_by(workers))

    _wait_for(workers_deliver, proc, log_path, 'two loader workers with batches in shared memory')
    _kill_and_check(proc, run_id, shm_before)
  finally:
    _end_run(run_id)


def test_kill_scan_with_a_worker_stuck_on_a_stalled_file(tmp_path):
  # A FIFO whose writer never writes stands in for a file on a stalled network mount: the worker that probes it
  # blocks in a read, and nothing in multiprocessing's own machinery reaches it there.
  root = testlib.write_tiny_dataset(str(tmp_path / 'data'))
  stalled = str(tmp_path / 'stalled.mp4')
  os.mkfifo(stalled)
  with open(os.path.join(root, 'train.csv')) as f:
    manifest_lines = [f'{stalled} 0\n'] + f.readlines()
  manifest = tmp_path / 'manifest.csv'
  manifest.write_text(''.join(manifest_lines))
  run_id, log_path = uuid.uuid4().hex, str(tmp_path / 'log.txt')
  shm_before = set(os.listdir(SHM_DIR))
  proc = _start(run_id, ['mvit_jax.data.scan', f'--manifest={manifest}', f'--root={root}', '--workers=2'],
                log_path)
  writer = None
  try:
    def worker_reads_the_fifo():
      nonlocal writer
      try:  # Opens only once a reader has: then the worker is inside its probe, and stays in it.
        writer = os.open(stalled, os.O_WRONLY | os.O_NONBLOCK)
      except OSError:
        return False
      return True

    _wait_for(worker_reads_the_fifo, proc, log_path, 'a scan worker reading the stalled file')
    assert len(_workers(run_id)) == 2
    _kill_and_check(proc, run_id, shm_before)
  finally:
    if writer is not None:
      os.close(writer)
    _end_run(run_id)
