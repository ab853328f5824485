r"""What is in these videos: top-k classes (and optionally features) of a model folder on video files.

    python -m mvit_jax.predict --model DIR INPUT... [--topk 5] [--views CLIPSxCROPS] [--batch_size N]
        [--output FILE.jsonl] [--workers N] [--features OUT_DIR [--stages] [--per_view]]
        [--visualize OUT_DIR [--explain_class C]]

DIR is a converted checkpoint or a training workdir (its model.json, the model card, gives the classes and the
input recipe). INPUT is video files (image files for image models), folders (searched recursively for them) or
manifests (`.csv` / `.txt`, `path label` lines as the data manifests, relative paths from the manifest's folder).
Every path (DIR, INPUT, --output, --features, --visualize) may be a local one or a bucket URL (`gs://bucket/...`);
a file written to a bucket appears when the run ends.
Each video is decoded and sampled into the card's evaluation views (mvit_jax.inference), views of several videos
share a forward pass, and each video's per-view softmax probabilities are averaged as the evaluator does. Per
video: one line on stdout (top-k class names, or indices when the card has none, with probabilities), and with
--output one JSON line {"video", "top_k": [{"class", "index", "probability"}], "views"[, "label", "features"]}. A
file that cannot be decoded is reported with its reason (stderr, and a JSON line {"video", "error"}) and skipped;
the exit status is 1 only when no video could be predicted.

--features OUT_DIR writes per video the pre-logit embedding averaged over the views (`N.npy`, (D,) float32), with
--per_view each view's (`N_views.npy`, (V, D)), with --stages each stage's last token grid per view
(`N_stages.npz`: stage{i} (V, T', H', W', C_i)), and OUT_DIR/index.jsonl mapping each video to its files.

--visualize OUT_DIR writes per video `N_NAME.mp4`, the first view's sampled frames under a Grad-CAM heatmap
(mvit_jax.inference.explain) of the top class, or of --explain_class (a class name or index), beside the top-k
classes and probabilities, and `N_NAME.png`, a contact sheet of those frames with and without the heatmap; the
JSON line names them ("visualization": {"mp4", "sheet"}).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import io
import json
import sys
import time

from absl import flags
from absl import logging
import grain
import numpy as np

from mvit_jax import inference
from mvit_jax.data import decode
from mvit_jax.data import sources
from mvit_jax.inference import explain
from mvit_jax.inference import visualize
from mvit_jax.system import storage
from mvit_jax.system.errors import InputError

FLAGS = flags.FLAGS
MANIFEST_EXTENSIONS = ('.csv', '.txt')


@dataclasses.dataclass
class Result:
  """One video's outcome: scores (C,) averaged over views, or the reason it failed."""
  path: str
  label: int | None = None
  scores: np.ndarray | None = None
  views: int = 0
  features: dict[str, np.ndarray] | None = None  # 'pre_logits' (V, D), 'stage{i}' (V, ...).
  first_view: np.ndarray | None = None  # uint8 (T, H, W, 3), with predict(keep_first_view=True).
  error: str | None = None


def find_inputs(inputs: Sequence[str], extensions: Sequence[str]) -> list[sources.VideoRecord]:
  """Video (or image) files named, found under folders (sorted, recursively) or listed in manifests, local or URL;
  a path that does not exist stays in the list (its decode reports it)."""
  records = []
  for path in inputs:
    if storage.isdir(path):
      found = [storage.join(path, rel) for rel in storage.files_under(path) if rel.lower().endswith(tuple(extensions))]
      if not found:
        raise InputError(f'{path}: no files ending in {", ".join(extensions)}')
      records += [sources.VideoRecord(p, None) for p in found]
    elif path.lower().endswith(MANIFEST_EXTENSIONS) and storage.isfile(path):
      records += sources.read_manifest(path, storage.parent(path))  # Relative paths: from the manifest's folder.
    else:
      records.append(sources.VideoRecord(path, None))
  return records


class _Views(grain.transforms.Map):
  """Video position -> {'position', 'video': uint8 (V, T, crop, crop, 3) (V = 0 on failure), 'error': str}."""

  def __init__(self, source, data_config):
    self.source, self.data_config = source, data_config

  def map(self, position):
    cfg, position = self.data_config, int(position)
    try:
      video, error = inference.eval_views(self.source, position, cfg), ''
    except decode.DecodeError as e:
      video, error = np.zeros((0, cfg.num_frames, cfg.crop_size, cfg.crop_size, 3), np.uint8), str(e)
    return {'position': position, 'video': video, 'error': error}


def load_views(predictor: inference.Predictor, paths: Sequence[str], workers: int) -> Iterator[dict]:
  """Each video's views in order, decoded ahead by `workers` processes (or by a thread when 0)."""
  ds = grain.MapDataset.range(len(paths)).map(_Views(predictor.make_source(paths), predictor.data_config))
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside absl.app.run use their defaults.
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
  return iter(it_ds)


def predict(predictor: inference.Predictor, records: Sequence[sources.VideoRecord], *, workers: int = 0,
            features: tuple[str, ...] = (), keep_first_view: bool = False) -> Iterator[Result]:
  """Results in input order; views of consecutive videos are batched together (predictor.batch_size rows)."""
  pending: dict[int, Result] = {}  # Position -> result waiting for its views' scores.
  rows, owners = [], []  # Views not yet run, and the position of the video each belongs to.
  scored: dict[int, list[dict]] = {}
  next_position = 0

  def run_rows(count):
    outputs = predictor.run(np.stack(rows[:count]), features)
    for i, position in enumerate(owners[:count]):
      scored.setdefault(position, []).append({k: v[i] for k, v in outputs.items()})
      result = pending[position]
      if len(scored[position]) == result.views:
        per_view = scored.pop(position)
        scores = np.stack([v['scores'] for v in per_view])
        result.scores = inference.average_views(scores, predictor.recipe.multi_label)
        result.features = {k: np.stack([v[k] for v in per_view]) for k in features} if features else None
    del rows[:count], owners[:count]

  def ready():
    nonlocal next_position
    while next_position in pending and (pending[next_position].error or pending[next_position].scores is not None):
      yield pending.pop(next_position)
      next_position += 1

  iterator = load_views(predictor, [r.path for r in records], workers)
  try:
    for element in iterator:
      position = int(element['position'])
      record = records[position]
      result = pending[position] = Result(record.path, record.label, views=len(element['video']))
      if element['error']:
        result.error = str(element['error'])
      elif keep_first_view:
        result.first_view = element['video'][0]
      rows.extend(element['video'])
      owners.extend([position] * len(element['video']))
      while len(rows) >= predictor.batch_size:
        run_rows(predictor.batch_size)
      yield from ready()
    if rows:
      run_rows(len(rows))
    yield from ready()
  finally:
    close = getattr(iterator, 'close', None)
    if close is not None:
      close()


def top_k(result: Result, predictor: inference.Predictor, k: int) -> list[dict]:
  order = np.argsort(-result.scores, kind='stable')[:k]
  return [{'class': predictor.class_name(int(i)), 'index': int(i), 'probability': float(result.scores[i])}
          for i in order]


def write_features(out_dir: str, number: int, result: Result, per_view: bool) -> dict:
  """Writes one video's feature files into out_dir (local or URL); returns its index entry (file names relative to
  out_dir)."""
  views = result.features['pre_logits']
  entry = {'video': result.path, 'embedding': f'{number:06d}.npy'}
  write_numpy(storage.join(out_dir, entry['embedding']), np.save, views.mean(axis=0))
  if per_view:
    entry['per_view'] = f'{number:06d}_views.npy'
    write_numpy(storage.join(out_dir, entry['per_view']), np.save, views)
  stages = {k: v for k, v in result.features.items() if k.startswith('stage')}
  if stages:
    entry['stages'] = f'{number:06d}_stages.npz'
    write_numpy(storage.join(out_dir, entry['stages']), np.savez, **stages)
  return entry


def write_numpy(path: str, save, *args, **kwargs) -> None:
  """Writes the file that `save` (np.save, np.savez) makes of its arguments to `path`, local or URL."""
  buffer = io.BytesIO()
  save(buffer, *args, **kwargs)
  storage.write_bytes(path, buffer.getvalue())


class Progress:
  """'done/total, videos/s, ETA' on one rewritten stderr line, when stderr is a terminal and there are more than
  a few videos."""

  def __init__(self, total: int):
    self.total, self.done, self.start = total, 0, time.monotonic()
    self.enabled = total > 3 and sys.stderr.isatty()

  def clear(self):
    if self.enabled:
      sys.stderr.write('\r\033[K')

  def step(self):
    self.done += 1
    if self.enabled:
      rate = self.done / max(time.monotonic() - self.start, 1e-9)
      eta = (self.total - self.done) / rate
      sys.stderr.write(f'\r{self.done}/{self.total} videos, {rate:.2f} videos/s, ETA {eta:.0f} s')
      sys.stderr.flush()


def write_visualization(out_dir: str, number: int, result: Result, predictor: inference.Predictor,
                        grad_cam: explain.GradCam, top: list[dict], explained: int | None) -> dict[str, str]:
  """visualize.write for one result: the Grad-CAM of class `explained` (None: the top class) on its first view."""
  explained = top[0]['index'] if explained is None else explained
  heat = grad_cam(result.first_view[None], [explained])[0]
  name = predictor.class_name(explained)
  return visualize.write(out_dir, number, result.path, result.first_view, heat, top,
                         str(explained) if name is None else name, visualize.playback_fps(predictor.data_config))


def describe(result: Result, top: list[dict]) -> str:
  shown = ', '.join(f'{t["class"] if t["class"] is not None else t["index"]} ({t["probability"]:.3f})' for t in top)
  return f'{result.path}: {shown}'


def main(argv):
  inputs = argv[1:]
  if not inputs:
    raise InputError('usage: python -m mvit_jax.predict --model DIR INPUT... (video files, folders or manifests)')
  if (FLAGS.stages or FLAGS.per_view) and not FLAGS.features:
    raise InputError('--stages and --per_view need --features OUT_DIR')
  if FLAGS.explain_class is not None and not FLAGS.visualize:
    raise InputError('--explain_class needs --visualize OUT_DIR')
  views = inference.parse_views(FLAGS.views) if FLAGS.views else None
  logging.set_verbosity(logging.ERROR)  # Checkpoint loading logs its every step; the results are this tool's output.
  predictor = inference.load(FLAGS.model, views=views, batch_size=FLAGS.batch_size)
  extensions = inference.IMAGE_EXTENSIONS if predictor.image else inference.VIDEO_EXTENSIONS
  records = find_inputs(inputs, extensions)
  features = ()
  if FLAGS.features:
    storage.makedirs(FLAGS.features)
    features = ('pre_logits',) + (predictor.stage_names if FLAGS.stages else ())
  output = storage.open_file(FLAGS.output, 'w') if FLAGS.output else None
  index = storage.open_file(storage.join(FLAGS.features, 'index.jsonl'), 'w') if features else None
  grad_cam, explained = None, None
  if FLAGS.visualize:
    if FLAGS.explain_class is not None:
      explained = visualize.explain_class(FLAGS.explain_class, predictor.card.classes,
                                          predictor.module.config.num_classes)
    grad_cam = explain.GradCam(predictor)
    storage.makedirs(FLAGS.visualize)
  progress = Progress(len(records))
  predicted = 0
  try:
    for number, result in enumerate(predict(predictor, records, workers=FLAGS.workers, features=features,
                                            keep_first_view=grad_cam is not None)):
      progress.clear()
      line = {'video': result.path}
      if result.label is not None:
        line['label'] = result.label
      if result.error:
        print(f'{result.path}: skipped: {result.error}', file=sys.stderr)
        line['error'] = result.error
      else:
        predicted += 1
        top = top_k(result, predictor, FLAGS.topk)
        print(describe(result, top), flush=True)
        line.update(top_k=top, views=result.views)
        if index is not None:
          entry = write_features(FLAGS.features, number, result, FLAGS.per_view)
          index.write(json.dumps(entry) + '\n')
          line['features'] = entry['embedding']
        if grad_cam is not None:
          line['visualization'] = write_visualization(FLAGS.visualize, number, result, predictor, grad_cam,
                                                      top, explained)
      if output is not None:
        output.write(json.dumps(line) + '\n')
        output.flush()
      progress.step()
  finally:
    progress.clear()
    for f in (output, index):
      if f is not None:
        f.close()
  print(f'predicted {predicted} of {len(records)} videos', file=sys.stderr)
  if not predicted:
    sys.exit(1)


def define_flags():
  """Command-line flags, defined only when run as a program (importing the module defines none)."""
  flags.DEFINE_string('model', None, 'Model folder: a converted checkpoint or a training workdir.', required=True)
  flags.DEFINE_integer('topk', 5, 'Classes shown per video.')
  flags.DEFINE_string('views', None, "CLIPSxCROPS views per video (default: the model card's).")
  flags.DEFINE_integer('batch_size', 16, 'Views per forward pass (rounded up to the device count).')
  flags.DEFINE_string('output', None, 'JSON lines file, one line per video.')
  flags.DEFINE_integer('workers', 0, 'Loader processes that decode videos (0: a thread of this process).')
  flags.DEFINE_string('features', None, 'Folder for per-video embeddings (.npy) and index.jsonl.')
  flags.DEFINE_bool('stages', False, 'With --features: also the per-stage token grids (.npz).')
  flags.DEFINE_bool('per_view', False, 'With --features: also the per-view embeddings.')
  flags.DEFINE_string('visualize', None, 'Folder for per-video mp4s and PNGs of the frames under a Grad-CAM heatmap.')
  flags.DEFINE_string('explain_class', None, 'With --visualize: the class (name or index) the heatmap explains '
                      '(default: the top class).')

