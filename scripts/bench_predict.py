"""Throughput of `python -m mvit_jax.predict`: videos/s end to end (decode + sample + forward) with 0 (a thread),
1 and 2 loader workers, against the forward pass alone and the decode alone, measured in the same run; prints which
one bounds. Worker processes start anew for every predict call: their start-up is part of the end-to-end rate.

  python scripts/bench_predict.py [--arch mvit_b_16x4] [--views 5x1] [--num_videos 6] [--batch_size 5]

The model is --arch with seeded random weights and the PySlowFast Kinetics recipe (mvit_jax.inference.recipes); the
videos are 10 s of 340x256 H.264 at 30 fps (a keyframe every 16 frames, as scripts/prepare_videos.py writes them),
generated into --video_dir once. Decode alone: the views of every video (decode, sampling, eval crop) in this
process, one after another. Forward alone: the jitted forward on those views, compiled beforehand. Each rate is
the best of --repeats timings (the machine may be shared).
"""
import tempfile
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import numpy as np

from mvit_jax.inference import recipes
from mvit_jax import inference
from mvit_jax.models import model_card
from mvit_jax.inference import predict
from mvit_jax.data import sources
from mvit_jax.data import synthetic
from mvit_jax.models import create_model
from mvit_jax.models import pretrained

_ARCH = flags.DEFINE_string('arch', 'mvit_b_16x4', 'Model variant (random weights).')
_VIEWS = flags.DEFINE_string('views', '5x1', 'CLIPSxCROPS per video.')
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 6, 'Videos per timing.')
_BATCH = flags.DEFINE_integer('batch_size', 5, 'Views per forward pass.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Each rate is the best of this many timings.')
_VIDEO_DIR = flags.DEFINE_string('video_dir', '/tmp/mvit_bench_predict_videos', 'Where the test videos live.')

WIDTH, HEIGHT, SECONDS = synthetic.BENCH_WIDTH, synthetic.BENCH_HEIGHT, synthetic.BENCH_SECONDS


def make_model_folder(arch: str, folder: str) -> None:
  """A converted-checkpoint-like folder: seeded random params and the PySlowFast recipe's card."""
  module = create_model(arch)
  cfg = module.config
  x = np.zeros((1, cfg.num_frames, cfg.input_size, cfg.input_size, 3), np.float32)
  pretrained.save_params(folder, nn.unbox(jax.device_get(jax.jit(module.init)(jax.random.key(0), x)['params'])))
  model_card.write(folder, model_card.ModelCard(arch, {}, None, recipes.input_recipe('pyslowfast', arch, cfg)))


def best_rate(count: int, run) -> float:
  """count / the shortest of --repeats wall times of run()."""
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return count / min(times)


def main(argv):
  del argv
  paths = synthetic.write_bench_videos(_VIDEO_DIR.value, _NUM_VIDEOS.value)
  with tempfile.TemporaryDirectory() as folder:
    make_model_folder(_ARCH.value, folder)
    predictor = inference.load(folder, views=inference.parse_views(_VIEWS.value), batch_size=_BATCH.value)
  print(f'{_ARCH.value}, {predictor.num_views} views/video, {len(paths)} videos of {SECONDS} s {WIDTH}x{HEIGHT}, '
        f'batch {predictor.batch_size} views, {jax.device_count()} {jax.devices()[0].platform} device(s)')
  views = [predictor.preprocess_video(p) for p in paths]
  all_views = np.concatenate(views)
  predictor.run(all_views[:predictor.batch_size])  # Compiles.
  rates = {'decode alone': best_rate(len(paths), lambda: [predictor.preprocess_video(p) for p in paths]),
           'forward alone': best_rate(len(paths), lambda: predictor.run(all_views))}
  records = [sources.VideoRecord(p, None) for p in paths]
  for workers in (0, 1, 2):
    rates[f'predict, {workers} worker(s)'] = best_rate(
        len(paths), lambda w=workers: list(predict.predict(predictor, records, workers=w)))
  for name, rate in rates.items():
    print(f'{name:>22}: {rate:7.3f} videos/s')
  slower = min(rates['decode alone'], rates['forward alone'])
  bound = 'decode' if rates['decode alone'] < rates['forward alone'] else 'the forward pass'
  print(f'bound by {bound}: predict with 2 workers reaches {rates["predict, 2 worker(s)"] / slower:.2f}x the slower '
        'of decode alone and forward alone')

if __name__ == '__main__':
  app.run(main)
