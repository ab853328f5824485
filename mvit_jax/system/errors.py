"""The error type for bad input (a config key or value, a path, a name) and the closest-name hint its messages use.

Library code raises `InputError` (or a subclass) for input a person can fix; the command-line entry points
(`mvit_jax.system.cli.run`) print its message as one line and exit with status 2. Every other exception is an internal
error and keeps its traceback.
"""
from collections.abc import Iterable
import difflib

from mvit_jax.system import storage


class InputError(ValueError):
  """Bad input from the command line, a config or a path it names; the message names it on one line."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
  """' (did you mean "x"?)' for the closest of `known` to `name` (difflib), '' when none is close."""
  matches = difflib.get_close_matches(name, list(known), n=1)
  return f' (did you mean {matches[0]!r}?)' if matches else ''


def did_you_mean_path(path: str) -> str:
  """did_you_mean for a path (local or URL) that does not exist, among the names in its folder."""
  folder = storage.parent(path) or '.'
  # Listing a URL's scheme root ('gs://') would ask for every bucket: a bucket name gets no hint.
  if storage.is_url(folder) and not folder.split('://', 1)[1].strip('/'):
    return ''
  return did_you_mean(storage.name(path), storage.listdir(folder)) if storage.isdir(folder) else ''


def check_folder(path: str, name: str) -> None:
  """InputError naming the setting `name` (e.g. '--root') when `path` (local or URL) is not a folder."""
  if not storage.isdir(path):
    raise InputError(f'{name}: no such folder {path!r}{did_you_mean_path(path)}')
