"""Worker processes that end with the process that started them.

A process killed by SIGKILL (an OOM kill, a preemption) cannot stop its children: they are reparented and live on,
holding their memory and shared-memory blocks. `exit_with_parent`, called in a multiprocessing child (a grain
worker's init function, a Pool initializer), starts a daemon thread that polls os.getppid() and ends the child
within POLL_SECONDS of its parent's end, whatever the child's main thread is doing, as long as it does not hold
the GIL (blocking reads and PyAV's decoding release it).

Not PR_SET_PDEATHSIG: the kernel sends that signal when the *thread* that started the child ends, and grain
starts its workers from prefetch threads that end while the workers are still in use (set_state, close).

A spawned child runs its parent's imports before any init function: `mvit_jax/__init__.py` calls
`watch_spawned_child` when a spawned child imports the package, so the child also ends with its parent while those
imports run.

Once the children are gone, multiprocessing's resource tracker (a process that lives until every process holding
its pipe has exited) unlinks the shared memory and semaphores still registered with it, then exits itself.
"""
from collections.abc import Callable
import multiprocessing
import os
import threading
import time

POLL_SECONDS = 0.5

_on_exit: list[Callable[[], None]] = []  # Run in order by the one watching thread of this process.
_watched_parent: int | None = None


def exit_with_parent(on_exit: Callable[[], None] | None = None) -> None:
  """In a multiprocessing child: exits (status 1) within POLL_SECONDS once the parent process is gone.

  on_exit runs first, in the watching thread (e.g. to unlink shared memory that only this process knows of).
  The parent is the pid multiprocessing recorded when it started the child, so a parent that died before this
  call is caught by the first check. Calls after the first add their on_exit to the same watch.
  """
  parent = multiprocessing.parent_process()
  if parent is None and _watched_parent is None:
    raise RuntimeError('exit_with_parent() is for processes started by multiprocessing')
  _watch_parent(_watched_parent if parent is None else parent.pid, on_exit)


def watch_spawned_child(argv: list[str]) -> None:
  """Starts the watch in a child that multiprocessing's spawn start method is starting (argv
  `[-c, --multiprocessing-fork]`), before it unpickles and imports what it runs; a no-op in any other process."""
  if argv[1:2] == ['--multiprocessing-fork']:
    _watch_parent(os.getppid(), None)


def _watch_parent(parent_pid: int, on_exit: Callable[[], None] | None) -> None:
  global _watched_parent
  if on_exit is not None:
    _on_exit.append(on_exit)
  if _watched_parent is None:
    _watched_parent = parent_pid
    threading.Thread(target=_watch, args=(parent_pid,), name='exit-with-parent', daemon=True).start()


def _watch(parent_pid: int) -> None:
  while os.getppid() == parent_pid:
    time.sleep(POLL_SECONDS)
  try:
    os.write(2, f'process {os.getpid()}: parent {parent_pid} is gone, exiting\n'.encode())
    for on_exit in _on_exit:
      on_exit()
  finally:
    os._exit(1)  # Skips atexit and finalizers, which may wait on the parent that is gone.
