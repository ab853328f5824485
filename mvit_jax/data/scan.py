"""Check every video of a manifest or a folder data set before training: open it, decode its first and last
frames, check its length.

  python -m mvit_jax.data.scan --manifest M [--root R] [--report FILE] [--workers N]
  python -m mvit_jax.data.scan ROOT [--folder_val_fraction F] [--folder_split_seed S] [--report FILE] [--workers N]

Prints a summary and one line per bad video with the reason; --report writes `path<TAB>ok|bad<TAB>detail` for
every video. A folder data set (ROOT/<class>/<video>, or ROOT/train and ROOT/val; mvit_jax.data.folder) also gets
a table of each class's videos per split (train/ and val/, or the split dataset_kind='folder' makes with the same
fraction and seed) and its unreadable ones. Exit status 0 when all are good, 1 when any is bad, 2 (one line on
stderr) when the manifest is missing or does not parse, or the folder is not a data set. Uses all cores.
Manifest entries that are folders are checked as frame folders (first and last frame readable). The manifest, the
root, the videos and the report may be bucket URLs (gs://...).
"""
import multiprocessing
import os
import sys

from absl import app
from absl import flags
import numpy as np

from mvit_jax.system import cli
from mvit_jax.system import errors
from mvit_jax.system import process_lifetime
from mvit_jax.system import storage
from mvit_jax.data import config as data_config_lib
from mvit_jax.data import decode
from mvit_jax.data import folder
from mvit_jax.data import sources


def check_video(path: str) -> tuple[str, bool, str]:
  """(path, ok, detail): detail is 'frames x fps, HxW' for good videos and the reason for bad ones."""
  try:
    if storage.isdir(path):
      clip = decode.decode_frame_folder(path, lambda n, fps: [0, n - 1], fps=0.0)
      return path, True, f'{clip.num_video_frames} frames, {clip.frames.shape[1]}x{clip.frames.shape[2]}'
    clip = decode.probe_video(path)
    return path, True, (f'{clip.num_video_frames} frames @ {clip.fps:.2f} fps, '
                        f'{clip.frames.shape[1]}x{clip.frames.shape[2]}')
  except decode.DecodeError as e:
    return path, False, str(e)
  except Exception as e:  # pylint: disable=broad-except  (a store's error, after its retries, asking what `path` is)
    return path, False, f'cannot fetch: {e}'


def scan(paths: list[str], workers: int = 0) -> list[tuple[str, bool, str]]:
  """check_video on every path, in manifest order, across `workers` processes (0: all cores)."""
  workers = min(workers or os.cpu_count() or 1, max(1, len(paths)))
  if workers == 1:
    return [check_video(p) for p in paths]
  # A worker stuck on a stalled file would outlive a killed scan; exit_with_parent ends it.
  with multiprocessing.get_context('spawn').Pool(workers, initializer=process_lifetime.exit_with_parent) as pool:
    return pool.map(check_video, paths, chunksize=max(1, min(64, len(paths) // (4 * workers))))


def folder_table(dataset: folder.FolderDataset, bad_paths: set[str]) -> str:
  """Per class: its label, name, train and val videos and unreadable ones (in `bad_paths`), then the totals, then
  a line for each class none of whose videos is readable."""
  counts = np.zeros((len(dataset.classes), 3), np.int64)  # train, val, unreadable
  for column, records in enumerate((dataset.train, dataset.eval)):
    for record in records:
      counts[record.label, column] += 1
      counts[record.label, 2] += record.path in bad_paths
  width = max(len('class'), *map(len, dataset.classes))
  lines = [f'label  {"class":<{width}}  {"train":>7}  {"val":>7}  {"unreadable":>10}']
  rows = [(str(label), name, *row) for label, (name, row) in enumerate(zip(dataset.classes, counts))]
  for label, name, train, val, bad in rows + [('', 'total', *counts.sum(axis=0))]:
    lines.append(f'{label:<5}  {name:<{width}}  {train:>7}  {val:>7}  {bad:>10}')
  lines += [f'NO READABLE VIDEO in class {name}: all {train + val} are unreadable'
            for name, (train, val, bad) in zip(dataset.classes, counts) if bad == train + val]
  return '\n'.join(lines)


def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if len(argv) > 2 or (len(argv) == 2) == bool(FLAGS.manifest):
    raise app.UsageError('give a folder data set ROOT or --manifest M (not both)')
  if len(argv) == 2:
    if FLAGS.root:
      raise app.UsageError('--root goes with --manifest; a folder data set is its own root')
    if not 0 < FLAGS.folder_val_fraction < 1:
      raise errors.InputError(f'--folder_val_fraction must be in (0, 1), got {FLAGS.folder_val_fraction}')
    dataset = folder.read(argv[1], val_fraction=FLAGS.folder_val_fraction, split_seed=FLAGS.folder_split_seed)
    records = dataset.train + dataset.eval
  else:
    if FLAGS.root:
      errors.check_folder(FLAGS.root, '--root')
    records = sources.read_manifest(FLAGS.manifest, FLAGS.root, multi_label=FLAGS.multi_label)
  results = scan([r.path for r in records], FLAGS.workers)
  bad = [(path, detail) for path, ok, detail in results if not ok]
  if len(argv) == 2:
    split = ('train/ and val/' if dataset.given_split else
             f'{FLAGS.folder_val_fraction:g} of each class to val, seed {FLAGS.folder_split_seed}')
    print(f'folder data set {dataset.root}: {len(dataset.classes)} classes, split: {split}')
    print(folder_table(dataset, {path for path, _ in bad}))
  if FLAGS.report:
    storage.write_text(FLAGS.report, ''.join(f'{path}\t{"ok" if ok else "bad"}\t{detail}\n'
                                             for path, ok, detail in results))
  for path, reason in bad:
    print(f'BAD {path}: {reason}')
  print(f'scanned {len(results)} videos: {len(results) - len(bad)} good, {len(bad)} bad')
  sys.exit(1 if bad else 0)


def _define_flags():
  """Command-line flags, defined only when run as a program (importing the module defines none)."""
  defaults = data_config_lib.default_data_config()
  flags.DEFINE_string('manifest', None, 'PySlowFast manifest (`path label` lines); or give a folder data set ROOT.')
  flags.DEFINE_float('folder_val_fraction', defaults.folder_val_fraction,
                     'Folder data set without train/ and val/: fraction of each class that goes to eval.')
  flags.DEFINE_integer('folder_split_seed', defaults.folder_split_seed, 'Folder data set: seed of that split.')
  flags.DEFINE_string('root', '', 'Folder the manifest paths are relative to.')
  flags.DEFINE_string('report', None, 'Optional TSV report of every video.')
  flags.DEFINE_integer('workers', 0, 'Processes (0: all cores).')
  flags.DEFINE_bool('multi_label', False, 'Labels are comma-separated lists.')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
