"""Writing an output folder all at once: a reader (or a failed run) never sees half of it."""
import contextlib
import os
import shutil
import tempfile

from mvit_jax.system import storage


def is_missing_or_empty(path: str) -> bool:
  """True when `path` (local or URL) is nothing yet or an empty folder: what an output folder must be."""
  return not storage.exists(path) or (storage.isdir(path) and not storage.listdir(path))


@contextlib.contextmanager
def staged_folder(out: str, *, last: str | None = None):
  """Yields a staging folder beside `out` that becomes `out` when the block succeeds and is deleted when it fails.

  `out` must be missing or empty (callers check first, to say so in their own words). For a bucket URL the staging
  folder is a local temporary one, uploaded when the block succeeds with the file `last` (a relative path, e.g.
  'model.json') written after all the others: a bucket has no rename, so readers wait for that file.
  """
  if storage.is_url(out):
    with tempfile.TemporaryDirectory() as staging:
      yield staging
      storage.upload_tree(staging, out, last=last)
    return
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-", dir=parent)
  os.chmod(staging, 0o755)  # mkdtemp's 0o700 would stay on `out`.
  try:
    yield staging
    if os.path.isdir(out):
      os.rmdir(out)
    os.replace(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
