r"""What is in these videos: top-k classes (and optionally features) of a model folder on video files.

    python -m mvit_jax.predict --model DIR INPUT... [--topk 5] [--views CLIPSxCROPS] [--batch_size N]
        [--output FILE.jsonl] [--workers N] [--features OUT_DIR [--stages] [--per_view]]
        [--visualize OUT_DIR [--explain_class C] [--explain_layer first|last] [--explain_method hirescam|gradcam]]

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

An action detector (a model card with overrides.detection, trained on AVA) takes person boxes:

    python -m mvit_jax.predict --model DIR --boxes boxes.csv VIDEO... [--output FILE.jsonl] [--ava_csv FILE.csv]
        [--start_sec S] [--test_view center|full] [--topk 5] [--batch_size N] [--visualize OUT_DIR]

boxes.csv is in AVA's format, `video_id,sec,x1,y1,x2,y2[,...]` (x, y normalised to the frame; further columns are
read past; rows repeating a box at a keyframe are one box), a video's id being its file name without the extension;
`sec` is the keyframe's second, the video's time 0 being second --start_sec (0; 900 for AVA's 15-minute cuts). Per
keyframe the clip centred on it (only its frames decoded) becomes the card's test view, or --test_view's, with the
boxes carried along (mvit_jax.inference.detect), and per box one JSON line {"video", "video_id", "sec", "box",
"visible", "top_k": [{"action", "id", "score"}]} goes to --output or, without it, to stdout: "box" is as the CSV
gave it, "visible" the share of its area inside the view (a centre crop cuts off what lies outside it), scores are
sigmoid scores, "id" the 1-based action id. --ava_csv writes every box x class as an AVA detections CSV
(`video_id,sec,x1,y1,x2,y2,action_id,score`, mvit_jax.train.ava_eval.write_detections: what `python -m
mvit_jax.ava_eval` scores). Videos the CSV does not name, and keyframes that cannot be read, are reported on stderr
and skipped. --visualize OUT_DIR writes per video `N_NAME.mp4` (each keyframe's clip with its boxes and their top
actions drawn) and `N_NAME.png` (a contact sheet of the first keyframes).

--visualize OUT_DIR writes per video `N_NAME.mp4`, the first view's sampled frames under a heatmap
(mvit_jax.inference.explain: HiResCAM at the patch embedding's tokens, or what --explain_method and
--explain_layer choose) of the top class, or of --explain_class (a class name or index), beside the top-k
classes and probabilities, and `N_NAME.png`, a contact sheet of those frames with and without the heatmap; the
JSON line names them ("visualization": {"mp4", "sheet"}).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import collections
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
from mvit_jax.data import config as data_config_lib
from mvit_jax.data import decode
from mvit_jax.data import pipeline
from mvit_jax.data import sources
from mvit_jax.inference import detect
from mvit_jax.inference import explain
from mvit_jax.inference import visualize
from mvit_jax.system import storage
from mvit_jax.system.errors import InputError
from mvit_jax.train import ava_eval

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
  """Each video's views in order, decoded ahead by `workers` processes (or by the read threads when 0), each with
  one read thread, or for videos in a bucket read_prefetch, as each video then waits tens of ms for its bytes."""
  source = predictor.make_source(paths)
  threads = pipeline.read_thread_count(predictor.data_config, source)
  ds = grain.MapDataset.range(len(paths)).map(_Views(source, predictor.data_config))
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(2, threads)))
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
                        heatmap: explain.Heatmap, top: list[dict], explained: int | None) -> dict[str, str]:
  """visualize.write for one result: the heatmap of class `explained` (None: the top class) on its first view."""
  explained = top[0]['index'] if explained is None else explained
  heat = heatmap(result.first_view[None], [explained])[0]
  name = predictor.class_name(explained)
  return visualize.write(out_dir, number, result.path, result.first_view, heat, top,
                         str(explained) if name is None else name, visualize.playback_fps(predictor.data_config),
                         heatmap.title)


def describe(result: Result, top: list[dict]) -> str:
  shown = ', '.join(f'{t["class"] if t["class"] is not None else t["index"]} ({t["probability"]:.3f})' for t in top)
  return f'{result.path}: {shown}'


def box_records(result: detect.KeyframeResult, video_id: str, class_names, k: int) -> list[dict]:
  """The JSON lines of one keyframe's boxes."""
  return [{'video': result.video, 'video_id': video_id, 'sec': result.sec,
           'box': [float(np.format_float_positional(x, unique=True)) for x in box],  # float32's shortest decimals.
           'visible': round(float(visible), 4), 'top_k': detect.top_actions(scores, class_names, k)}
          for box, visible, scores in zip(result.boxes, result.visible, result.scores)]


def main_boxes(predictor: inference.Predictor, inputs: Sequence[str]) -> None:
  """predict --boxes: per-box action scores of a detector (the module docstring)."""
  queries = detect.read_boxes_csv(FLAGS.boxes)
  records = find_inputs(inputs, inference.VIDEO_EXTENSIONS)
  ids = [detect.video_id(r.path) for r in records]
  if not set(ids) & set(queries):
    named = ', '.join(sorted(queries)[:3]) + (', ...' if len(queries) > 3 else '')
    raise InputError(f'--boxes {FLAGS.boxes} names none of the given videos (their ids: {", ".join(ids[:3])}'
                     f'{", ..." if len(ids) > 3 else ""}; the file names {named})')
  names = predictor.card.classes
  output = storage.open_file(FLAGS.output, 'w') if FLAGS.output else sys.stdout
  rows = {'videos': [], 'seconds': [], 'boxes': [], 'scores': []}
  counts = collections.Counter()
  if FLAGS.visualize:
    storage.makedirs(FLAGS.visualize)
  try:
    for number, (record, vid) in enumerate(zip(records, ids)):
      if vid not in queries:
        print(f'{record.path}: skipped: {FLAGS.boxes} has no boxes for video id {vid!r}', file=sys.stderr)
        continue
      drawing = (visualize.DetectionVideo(FLAGS.visualize, number, record.path, names,
                                          visualize.playback_fps(predictor.data_config), min(FLAGS.topk, 3))
                 if FLAGS.visualize else None)
      for result in detect.predict_video(predictor, record.path, queries[vid], start_sec=FLAGS.start_sec,
                                         keep_clips=drawing is not None, threads=FLAGS.decode_threads):
        if result.error:
          counts['failed'] += 1
          print(f'{record.path}: second {result.sec}: skipped: {result.error}', file=sys.stderr)
          continue
        counts['keyframes'] += 1
        counts['boxes'] += len(result.boxes)
        for line in box_records(result, vid, names, FLAGS.topk):
          output.write(json.dumps(line) + '\n')
        output.flush()
        for key, value in (('videos', [vid] * len(result.boxes)), ('seconds', [result.sec] * len(result.boxes)),
                           ('boxes', list(result.boxes)), ('scores', list(result.scores))):
          rows[key] += value
        if drawing is not None:
          drawing.add(result)
      if drawing is not None:
        drawing.close()
  finally:
    if output is not sys.stdout:
      output.close()
  if FLAGS.ava_csv and counts['boxes']:
    ava_eval.write_detections(FLAGS.ava_csv, ava_eval.detection_rows(
        rows['videos'], rows['seconds'], np.asarray(rows['boxes']), np.asarray(rows['scores']),
        range(1, predictor.module.config.num_classes + 1)))
  failed = f' ({counts["failed"]} keyframes unreadable)' if counts['failed'] else ''
  print(f'predicted {counts["boxes"]} boxes on {counts["keyframes"]} keyframes{failed}', file=sys.stderr)
  if not counts['keyframes']:
    sys.exit(1)


def check_boxes_flags(predictor: inference.Predictor) -> None:
  """One line for flags a detector or a classifier cannot take."""
  if FLAGS.boxes and not predictor.detector:
    raise InputError(f'--boxes needs an action detector; {FLAGS.model} is a classifier (its model.json has no '
                     '"detection": true in overrides)')
  if predictor.detector and not FLAGS.boxes:
    raise InputError(f'{FLAGS.model} is an action detector: give the person boxes with --boxes boxes.csv '
                     '(video_id,sec,x1,y1,x2,y2 rows)')
  if not predictor.detector and FLAGS.ava_csv:
    raise InputError('--ava_csv needs a detector and --boxes')
  if predictor.detector:
    for name in ('features', 'views', 'explain_class', 'explain_layer', 'explain_method', 'workers'):
      if FLAGS[name].present:
        raise InputError(f'--{name} is for classifiers (a detector scores boxes on one view per keyframe, decoded '
                         'in this process)')


def main(argv):
  inputs = argv[1:]
  if not inputs:
    raise InputError('usage: python -m mvit_jax.predict --model DIR INPUT... (video files, folders or manifests)')
  if (FLAGS.stages or FLAGS.per_view) and not FLAGS.features:
    raise InputError('--stages and --per_view need --features OUT_DIR')
  for name in ('explain_class', 'explain_layer', 'explain_method'):
    if FLAGS[name].present and not FLAGS.visualize:
      raise InputError(f'--{name} needs --visualize OUT_DIR')
  views = inference.parse_views(FLAGS.views) if FLAGS.views else None
  logging.set_verbosity(logging.ERROR)  # Checkpoint loading logs its every step; the results are this tool's output.
  predictor = inference.load(FLAGS.model, views=views, batch_size=FLAGS.batch_size, test_view=FLAGS.test_view)
  check_boxes_flags(predictor)
  if predictor.detector:
    main_boxes(predictor, inputs)
    return
  extensions = inference.IMAGE_EXTENSIONS if predictor.image else inference.VIDEO_EXTENSIONS
  records = find_inputs(inputs, extensions)
  features = ()
  if FLAGS.features:
    storage.makedirs(FLAGS.features)
    features = ('pre_logits',) + (predictor.stage_names if FLAGS.stages else ())
  output = storage.open_file(FLAGS.output, 'w') if FLAGS.output else None
  index = storage.open_file(storage.join(FLAGS.features, 'index.jsonl'), 'w') if features else None
  heatmap, explained = None, None
  if FLAGS.visualize:
    if FLAGS.explain_class is not None:
      explained = visualize.explain_class(FLAGS.explain_class, predictor.card.classes,
                                          predictor.module.config.num_classes)
    heatmap = explain.Heatmap(predictor, layer=FLAGS.explain_layer, method=FLAGS.explain_method)
    storage.makedirs(FLAGS.visualize)
  progress = Progress(len(records))
  predicted = 0
  try:
    for number, result in enumerate(predict(predictor, records, workers=FLAGS.workers, features=features,
                                            keep_first_view=heatmap is not None)):
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
        if heatmap is not None:
          line['visualization'] = write_visualization(FLAGS.visualize, number, result, predictor, heatmap,
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
  flags.DEFINE_string('visualize', None, 'Folder for per-video mp4s and PNGs of the frames under a class heatmap.')
  flags.DEFINE_string('explain_class', None, 'With --visualize: the class (name or index) the heatmap explains '
                      '(default: the top class).')
  flags.DEFINE_enum('explain_layer', 'first', explain.LAYERS, 'With --visualize: the tokens the heatmap explains, '
                    'those entering the first block (the patch embedding\'s grid) or the last.')
  flags.DEFINE_enum('explain_method', 'hirescam', list(explain.METHODS), 'With --visualize: HiResCAM (gradient x '
                    'activation, token by token) or Grad-CAM (one weight per channel).')
  flags.DEFINE_string('boxes', None, 'Action detectors: person boxes, an AVA-format CSV '
                      '(video_id,sec,x1,y1,x2,y2[,...], normalised; video_id = the file name without extension).')
  flags.DEFINE_integer('start_sec', 0, 'With --boxes: the second of the CSV at time 0 of each video (900 for AVA\'s '
                     '15-minute cuts).')
  flags.DEFINE_string('ava_csv', None, 'With --boxes: write every box x class as an AVA detections CSV.')
  flags.DEFINE_integer('decode_threads', 1, 'With --boxes: FFmpeg threads per video decode.')
  flags.DEFINE_enum('test_view', None, list(data_config_lib.AVA_TEST_VIEWS), "With --boxes: the detector's view of a keyframe "
                    "(default: the model card's): the centre crop or the full frame, short side to the crop size.")

