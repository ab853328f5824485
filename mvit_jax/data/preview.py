"""Contact sheet of one augmented training batch: look at what the model will see.

  python -m mvit_jax.data.preview --manifest M [--root R] [--config CFG] --out grid.png

One row per clip, one column per sampled frame, each row titled with its label (and class name when the config
has a classes file). Prints the batch's shapes, value range and skip count. --config takes a trainer experiment
file (its `.data` is used) or a data config file; `--config.data.num_frames=8`-style overrides work. The loader's
uint8 batch goes through `preprocess_on_device(train=True)` (normalisation and random erasing) first, as in the
train step. The manifest, root, classes file and --out may be bucket URLs (gs://...).
"""
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from mvit_jax.system import cli
from mvit_jax.system import errors
from mvit_jax.system import storage
from mvit_jax.data import config as config_lib
from mvit_jax.data import device_preprocess
from mvit_jax.data import pipeline
from mvit_jax.data import render
from mvit_jax.data import sources


def contact_sheet(video: np.ndarray, titles: list[str], mean, std, min_cell: int = 112) -> np.ndarray:
  """(B, T, H, W, 3) normalised clips -> uint8 (H', W', 3): row b holds clip b's T frames under titles[b]."""
  pixels = np.clip((video * np.asarray(std) + np.asarray(mean)) * 255 + 0.5, 0, 255).astype(np.uint8)
  return render.frames_grid(list(pixels), titles, min_cell)


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  cfg = FLAGS.config if FLAGS.config is not None else config_lib.default_data_config()
  cfg = cfg.data if 'data' in cfg else cfg
  with cfg.unlocked():
    cfg.train_manifest = FLAGS.manifest
    cfg.dataset_kind = 'manifest' if cfg.dataset_kind == 'tfds' else cfg.dataset_kind
    if FLAGS.root is not None:
      cfg.root = FLAGS.root
    cfg.num_workers = 0
  if cfg.root:
    errors.check_folder(cfg.root, '--root' if FLAGS.root is not None else 'the config\'s root')
  it = pipeline.make_train_iterator(cfg, num_classes=sources.num_classes_from_config(cfg),
                                    global_batch_size=FLAGS.batch_size, seed=FLAGS.seed, process_index=0,
                                    process_count=1)
  batch = next(it)
  it.close()
  labels = batch['label']
  video = np.asarray(device_preprocess.preprocess_on_device(batch['video'], jax.random.key(FLAGS.seed), cfg,
                                                            train=True))
  names = sources.class_names_from_config(cfg)
  titles = []
  for i, label in enumerate(labels):
    ids = np.flatnonzero(label).tolist() if cfg.multi_label else [int(label)]
    text = ','.join(f'{k} ({names[k]})' if names else str(k) for k in ids)
    titles.append(f'clip {i}: label {text}')
  sheet = contact_sheet(video, titles, cfg.mean, cfg.std, FLAGS.min_cell)
  storage.write_bytes(FLAGS.out, render.encode_image(sheet, FLAGS.out))
  stats = pipeline.skip_stats()
  print(f'video {video.shape} {video.dtype}  range [{video.min():.3f}, {video.max():.3f}]  mean {video.mean():.3f}')
  print(f'label {labels.shape} {labels.dtype}: {labels.tolist()}')
  print(f'skipped {stats.skipped} (bad videos: {len(stats.bad_videos)})')
  print(f'wrote {FLAGS.out}')


def _define_flags():
  """Command-line flags, defined only when run as a program (importing the module defines none)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment or data config file (default: defaults).')
  flags.DEFINE_string('manifest', None, 'Training manifest (overrides the config).', required=True)
  flags.DEFINE_string('root', None, 'Root of the manifest paths (overrides the config).')
  flags.DEFINE_string('out', 'grid.png', 'PNG to write.')
  flags.DEFINE_integer('batch_size', 4, 'Clips in the batch (a multiple of num_repeated_samples).')
  flags.DEFINE_integer('seed', 0, 'Loader seed.')
  flags.DEFINE_integer('min_cell', 112, 'Frames smaller than this are enlarged (nearest) for viewing.')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
