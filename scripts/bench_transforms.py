"""Milliseconds per clip for the host-side clip transforms (one process, one thread).

  python scripts/bench_transforms.py [--clips 20] [--repeats 3] [--frames 16] [--height 256] [--width 340]

Baseline, measured in the same run: the same random-resized crop + flip done with Pillow's box resize (what a
Pillow-only pipeline would do). Ratios below 1 mean faster than that baseline. Every case outputs uint8 clips, as
the loaders ship them (normalisation and erasing run on the accelerator).
"""
import argparse
import os
import time

import numpy as np
from PIL import Image

from mvit_jax.data import transforms
from mvit_jax.data.config import default_data_config


def pillow_rrc_flip(frames, rng, cfg):
  """Baseline: RRC box -> Pillow bilinear box resize per frame -> flip."""
  top, left, h, w = transforms.sample_random_resized_crop_box(rng, frames.shape[1], frames.shape[2], cfg.rrc_area,
                                                              cfg.rrc_aspect)
  flip = rng.random() < 0.5
  size = cfg.crop_size
  out = np.empty((frames.shape[0], size, size, 3), np.uint8)
  for t, frame in enumerate(frames):
    image = Image.fromarray(frame).resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    out[t] = np.asarray(image.transpose(Image.FLIP_LEFT_RIGHT) if flip else image)
  return out


def ms_per_clip(fn, clips, repeats):
  """Best over `repeats` of the mean wall time per clip, in ms (seeded rng per clip: same work each repeat)."""
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    for i, clip in enumerate(clips):
      fn(clip, np.random.default_rng(i))
    best = min(best, (time.perf_counter() - start) / len(clips) * 1e3)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--clips', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--height', type=int, default=256)
  parser.add_argument('--width', type=int, default=340)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  # Smooth random content (a blurred-up noise image per frame), like decoded video rather than white noise.
  small = rng.integers(0, 256, (args.clips, args.frames, args.height // 16, args.width // 16, 3), dtype=np.uint8)
  clips = [transforms.resize(c, args.height, args.width) for c in small]

  recipe = default_data_config()  # MViT Kinetics: RRC, flip, rand-m7-n4-mstd0.5-inc1.
  no_randaugment = default_data_config()
  no_randaugment.randaugment = False
  jitter = default_data_config()
  jitter.update(dict(randaugment=False, random_resized_crop=False))

  cases = [
      ('baseline: Pillow RRC + flip', lambda c, r: pillow_rrc_flip(c, r, recipe)),
      ('train_transform, RRC + flip, no RandAugment', lambda c, r: transforms.train_transform(
          c, r, no_randaugment)),
      ('train_transform, full recipe (RandAugment m7 n4)', lambda c, r: transforms.train_transform(c, r, recipe)),
      ('train_transform, jitter [256,320] + crop + flip', lambda c, r: transforms.train_transform(c, r, jitter)),
      ('eval_transform, 1 crop (short side 256, centre 224)', lambda c, r: transforms.eval_transform(c, 1, 1,
                                                                                                     recipe)),
      ('eval_transform, 3 crops (short side 224), one view', lambda c, r: transforms.eval_transform(c, 0, 3, recipe)),
      ('rand_augment alone (m7 n4 mstd0.5, bicubic)', lambda c, r: transforms.rand_augment(c, r, 4, 7, 0.5)),
      ('rand_augment alone, bilinear warps', lambda c, r: transforms.rand_augment(c, r, 4, 7, 0.5, 'bilinear')),
  ]
  print(f'{args.clips} clips of {args.frames}x{args.height}x{args.width} uint8, best of {args.repeats}, '
        f'{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}')
  baseline = None
  for name, fn in cases:
    ms = ms_per_clip(fn, clips, args.repeats)
    baseline = baseline or ms
    print(f'{name:55s} {ms:7.2f} ms/clip  {ms / baseline:5.2f}x baseline')
  print(f'load average at the end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  main()
