"""Do the heatmaps of `predict --visualize` point at the evidence? A sanity check on clips where it is known.

  python scripts/heatmap_sanity.py [--seeds 0,1,2,3] [--steps 100] [--frames 8] [--size 48] [--sheet PNG]

The clips: static noise (levels 0-159) where, in the top-left quadrant only, a 6 px white square moves 3 px per
frame left (class 0) or right (class 1), wrapping around the quadrant. For each seed, mvit_tiny (the demo's model,
at the demo's 8 frames of 48x48 by default) is trained from that seed's initialisation on fresh clips (--steps
batches of 32, AdamW), then explained on 64 held-out clips for their true class with every layer x method of
mvit_jax.inference.explain. Printed per seed and combination: the mean share of the heatmap's mass inside the moving
quadrant (a quarter of the frame; chance 0.25) and the fraction of clips where that quadrant holds the most mass of
the four (chance 0.25); then each combination's range over the seeds. --sheet writes a contact sheet of one
held-out clip under each heatmap of the first seed's model.
"""
from absl import app
from absl import flags
import flax.linen as nn
import jax
import numpy as np
import optax

from mvit_jax import inference
from mvit_jax.data import device_preprocess
from mvit_jax.data import render
from mvit_jax.inference import explain
from mvit_jax.models import model_card
from mvit_jax.models.variants import create_model
from mvit_jax.system import storage

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3'], 'Training seeds (initialisation and clips).')
_STEPS = flags.DEFINE_integer('steps', 100, 'Training steps of 32 clips.')
_FRAMES = flags.DEFINE_integer('frames', 8, 'Frames per clip.')
_SIZE = flags.DEFINE_integer('size', 48, 'Frame height and width (px).')
_SHEET = flags.DEFINE_string('sheet', None, 'PNG path: one held-out clip under each heatmap (first seed).')

MEAN, STD = (0.45,) * 3, (0.225,) * 3
COMBINATIONS = [(layer, method) for layer in explain.LAYERS for method in explain.METHODS]


def moving_square_clips(rng: np.random.Generator, n: int, frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (n, frames, size, size, 3) clips and their int (n,) classes: 0 where the square moves left, 1 right."""
  labels = rng.integers(0, 2, n)
  quadrant = size // 2
  clips = np.repeat(rng.integers(0, 160, (n, 1, size, size, 3)), frames, axis=1).astype(np.uint8)
  for i in range(n):
    y, x = rng.integers(0, quadrant - 6), rng.integers(0, quadrant)
    for t in range(frames):
      columns = (x + (3 if labels[i] else -3) * t + np.arange(6)) % quadrant
      clips[i, t, y:y + 6, columns] = 255
  return clips, labels


def train_predictor(seed: int, *, frames: int, size: int, steps: int) -> inference.Predictor:
  """mvit_tiny (2 classes) trained on moving_square_clips from `seed`, as a Predictor of uint8 clips."""
  module = create_model('mvit_tiny', num_frames=frames, input_size=size, num_classes=2, drop_path_rate=0.0)
  params = nn.unbox(jax.jit(module.init)(jax.random.key(seed), np.zeros((1, frames, size, size, 3)))['params'])
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(1e-4, 2e-3, 20, steps, 1e-5), weight_decay=0.05)

  @jax.jit
  def step(params, state, clips, labels):
    def loss(p):
      logits = module.apply({'params': p}, device_preprocess.normalize(clips, MEAN, STD))
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  rng, state = np.random.default_rng(seed), tx.init(params)
  for _ in range(steps):
    params, state = step(params, state, *moving_square_clips(rng, 32, frames, size))
  card = model_card.ModelCard('mvit_tiny', {}, None, model_card.InputRecipe(
      num_frames=frames, sampling_rate=1, target_fps=30.0, short_side=size, crop_size=size, mean=MEAN, std=STD))
  return inference.Predictor(module, {'params': params}, card)


def quadrant_mass(heat: np.ndarray) -> tuple[float, float]:
  """heat (n, T, H, W) -> (mean share of each clip's mass in the top-left quadrant, fraction of clips where that
  quadrant holds the most mass of the four)."""
  n, frames, height, width = heat.shape
  per_quadrant = heat.reshape(n, frames, 2, height // 2, 2, width // 2).sum(axis=(1, 3, 5)).reshape(n, 4)
  share = per_quadrant[:, 0] / np.maximum(per_quadrant.sum(axis=1), 1e-9)
  return float(share.mean()), float((per_quadrant.argmax(axis=1) == 0).mean())


def main(argv):
  del argv
  frames, size = _FRAMES.value, _SIZE.value
  results = {combination: [] for combination in COMBINATIONS}
  for number, seed in enumerate(int(s) for s in _SEEDS.value):
    predictor = train_predictor(seed, frames=frames, size=size, steps=_STEPS.value)
    clips, labels = moving_square_clips(np.random.default_rng(1000 + seed), 64, frames, size)
    accuracy = (predictor.logits(clips).argmax(axis=1) == labels).mean()
    print(f'seed {seed}: held-out accuracy {accuracy:.3f}')
    heats = {}
    for layer, method in COMBINATIONS:
      heats[layer, method] = explain.Heatmap(predictor, layer=layer, method=method)(clips, labels)
      share, most = quadrant_mass(heats[layer, method])
      results[layer, method].append((share, most))
      print(f'  {explain.METHODS[method]:9s} {layer:5s} layer: {share:.2f} of the mass in the moving quadrant, '
            f'the most of the four in {most:.0%} of the clips')
    if number == 0 and _SHEET.value:
      rows = [clips[0]] + [render.overlay_heatmap(clips[0], heats[c][0]) for c in COMBINATIONS]
      titles = ['clip (square moving in the top-left quadrant)'] + [
          f'{explain.METHODS[method]}, {layer} layer' for layer, method in COMBINATIONS]
      storage.write_bytes(_SHEET.value, render.encode_image(render.frames_grid(rows, titles, 96), _SHEET.value))
  print(f'over seeds {",".join(_SEEDS.value)} ({frames} frames of {size}x{size}, {_STEPS.value} steps):')
  for layer, method in COMBINATIONS:
    shares, mosts = zip(*results[layer, method])
    print(f'  {explain.METHODS[method]:9s} {layer:5s} layer: share {min(shares):.2f}-{max(shares):.2f}, '
          f'most mass {min(mosts):.0%}-{max(mosts):.0%}')


if __name__ == '__main__':
  app.run(main)
