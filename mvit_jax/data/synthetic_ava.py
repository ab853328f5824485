"""A small synthetic AVA data set in PySlowFast's layout, with the same clips as mp4 files, for demos and tests.

"People" (a body, a head and one arm) move on a textured background with static clutter. Each annotated person
does one or more of ACTIONS for the whole video: 'walk' or 'run' (horizontal motion, slow or fast, either
direction, turning at the edges), 'jump' (bouncing up and down) and 'wave' (the arm swinging); every person's
position, size, colours and (resting) arm angle are random, so a single frame tells no action from another, only
motion does, and horizontal flips keep every action. Each video also has an idle person (no action: not in the
ground truth, a negative proposal and a false-positive detection) and detector boxes on the background.

  write_dataset(root)  ->  root/frames/{video}/{video}_{%06d}.jpg, root/frame_lists/{train,val}.csv,
                           root/videos/{video}.mp4, root/annotations/ (AVA's file names: train ground truth,
                           train proposals with negatives, val ground truth, val detections, label map,
                           val exclusions)
  configure(data_config, root)  sets the ava_* keys (paths, fps, seconds) for that layout.

Frame 0 is at AVA second 900 (as AVA's frames), keyframes are every second from 902 to 900 + seconds - 2.
`python -m mvit_jax.data.synthetic_ava --out DIR` writes one from the command line.
"""
import dataclasses
import io
import math

from absl import app
from absl import flags
import cv2
import numpy as np
from PIL import Image

from mvit_jax.data import ava
from mvit_jax.data import synthetic
from mvit_jax.system import storage

ACTIONS = ('walk', 'run', 'jump', 'wave')  # Action id i + 1 is ACTIONS[i].
START_SEC = 900
MARGIN_SECS = 2  # Keyframes keep this far from the ends, so clips of up to 2 * fps frames need no clamping.

TRAIN_GT = 'ava_train_v2.2.csv'
TRAIN_PROPOSALS = 'person_box_67091280_iou90/ava_detection_train_boxes_and_labels_include_negative_v2.2.csv'
VAL_GT = 'ava_val_v2.2.csv'
VAL_DETECTIONS = 'person_box_67091280_iou90/ava_detection_val_boxes_and_labels.csv'
LABEL_MAP = 'ava_action_list_v2.2_for_activitynet_2019.pbtxt'
EXCLUSIONS = 'ava_val_excluded_timestamps_v2.2.csv'


@dataclasses.dataclass
class _Person:
  x: float              # Centre of the body's bottom edge, pixels.
  y: float
  vx: float             # Pixels per frame.
  width: float
  height: float         # Body and head.
  arm_angle: float      # Resting angle, radians (0 = right, -pi/2 = up), in [-150, -30] degrees.
  body: tuple
  head: tuple
  actions: tuple        # 1-based ids; () for the idle person.
  phase: float


def _draw_person(frame: np.ndarray, p: _Person, t: int, fps: float) -> tuple[float, float, float, float]:
  """Draws person p at frame t; returns its box (x1, y1, x2, y2) in pixels (body and head)."""
  seconds = t / fps
  lift = 0.35 * p.height * abs(math.sin(math.pi * (seconds / 0.6 + p.phase))) if 3 in p.actions else 0.0
  # A waving arm swings through the range resting arms are drawn from, so no single arm angle shows a wave.
  angle = (-math.pi / 2 + math.radians(60) * math.sin(2 * math.pi * (seconds / 0.5 + p.phase))
           if 4 in p.actions else p.arm_angle)
  head_r = 0.14 * p.height
  x1, x2 = p.x - p.width / 2, p.x + p.width / 2
  y2 = p.y - lift
  y1 = y2 - p.height
  body_top = y1 + 2 * head_r
  cv2.rectangle(frame, (round(x1), round(body_top)), (round(x2), round(y2)), p.body, -1)
  cv2.circle(frame, (round(p.x), round(y1 + head_r)), max(1, round(head_r)), p.head, -1)
  shoulder = (x2, body_top + 0.15 * p.height)
  arm = 0.45 * p.height
  hand = (shoulder[0] + arm * math.cos(angle), shoulder[1] + arm * math.sin(angle))
  cv2.line(frame, (round(shoulder[0]), round(shoulder[1])), (round(hand[0]), round(hand[1])), p.head,
           max(1, round(p.width / 5)))
  return x1, y1, x2, y2


def _step(p: _Person, width: int) -> None:
  """Moves p one frame, turning at the frame's edges."""
  p.x += p.vx
  lo, hi = p.width, width - p.width
  if p.x < lo or p.x > hi:
    p.vx = -p.vx
    p.x = min(max(p.x, lo), hi)


def _draw_actions(rng: np.random.Generator) -> tuple[int, ...]:
  """At least one action: horizontal motion (none, walk or run), jump and wave drawn independently."""
  while True:
    motion = int(rng.integers(3))  # 0: none, 1: walk, 2: run.
    actions = ((motion,) if motion else ()) + ((3,) if rng.random() < 0.4 else ()) + ((4,) if rng.random() < 0.4
                                                                                     else ())
    if actions:
      return actions


def _person(rng, actions, height, width, fps) -> _Person:
  h = rng.uniform(0.35, 0.5) * height
  speed = {1: 0.012, 2: 0.035}.get(actions[0] if actions else 0, 0.0) * width * 10 / fps
  body, head = (tuple(int(v) for v in rng.integers(150, 256, 3)) for _ in range(2))
  return _Person(x=rng.uniform(0.2, 0.8) * width, y=rng.uniform(h + 0.05 * height, 0.97 * height),
                 vx=speed * rng.choice([-1, 1]), width=h * rng.uniform(0.3, 0.4), height=h,
                 arm_angle=rng.uniform(-math.radians(150), -math.radians(30)), body=body, head=head,
                 actions=actions, phase=rng.uniform(0, 1))


def _background(rng, height, width) -> np.ndarray:
  """Smooth random texture with static clutter shapes (uint8 (H, W, 3))."""
  coarse = rng.uniform(30, 110, size=(4, 5, 3)).astype(np.float32)
  frame = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
  frame = np.clip(frame, 0, 255).astype(np.uint8)
  for _ in range(3):
    colour = tuple(int(v) for v in rng.integers(60, 200, 3))
    cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.1) * height
    if rng.random() < 0.5:
      cv2.circle(frame, (round(cx), round(cy)), round(r), colour, -1)
    else:
      cv2.rectangle(frame, (round(cx - r), round(cy - r)), (round(cx + r), round(cy + r)), colour, -1)
  return frame


def _jitter(box: np.ndarray, rng, scale: float) -> np.ndarray:
  """box (4,) normalised, each edge moved by up to `scale` x the box size, clipped to [0, 1]."""
  size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
  out = box + rng.uniform(-scale, scale, 4) * size
  out = np.clip(out, 0, 1)
  return np.array([min(out[0], out[2]), min(out[1], out[3]), max(out[0], out[2]), max(out[1], out[3])])


def _random_box(rng) -> np.ndarray:
  w, h = rng.uniform(0.1, 0.3), rng.uniform(0.2, 0.5)
  x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
  return np.array([x, y, x + w, y + h])


def _fmt(box) -> str:
  return ','.join(f'{v:.3f}' for v in box)


def _box_rows(video, sec, box, actions, last) -> list[str]:
  """AVA CSV rows of one box: one per action, or one with an empty action."""
  return [f'{video},{sec},{_fmt(box)},{a},{last}\n' for a in actions] or [f'{video},{sec},{_fmt(box)},,{last}\n']


def _video(rng, *, seconds, fps, height, width, people, noise):
  """(frames (N, H, W, 3) uint8, {frame index: [(box (4,) normalised, actions)]} of every person incl. the idle)."""
  num_frames = int(round(seconds * fps))
  persons = [_person(rng, _draw_actions(rng), height, width, fps)
             for _ in range(int(rng.integers(people[0], people[1] + 1)))]
  persons.append(_person(rng, (), height, width, fps))  # The idle person.
  background = _background(rng, height, width)
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  boxes = {}
  scale = np.array([width, height, width, height], np.float64)
  for t in range(num_frames):
    frame = background.copy()
    boxes[t] = [(np.clip(np.array(_draw_person(frame, p, t, fps)) / scale, 0, 1), p.actions) for p in persons]
    for p in persons:
      _step(p, width)
    frames[t] = np.clip(frame.astype(np.int16) + rng.integers(-noise, noise + 1, frame.shape), 0, 255) if noise \
        else frame
  return frames, boxes


def write_dataset(root: str, *, num_videos: int = 12, num_val_videos: int = 4, seconds: int = 8, fps: float = 10,
                  height: int = 96, width: int = 128, people: tuple[int, int] = (2, 3), noise: int = 3,
                  seed: int = 0) -> list[str]:
  """Writes the data set described in the module docstring (the last num_val_videos videos are val); returns the
  video ids. Deterministic under `seed`."""
  if height % 2 or width % 2:
    raise ValueError(f'H.264 needs even frame sizes, got {height}x{width}')
  if not 0 < num_val_videos < num_videos:
    raise ValueError(f'num_val_videos must be in [1, {num_videos - 1}], got {num_val_videos}')
  if seconds < 2 * MARGIN_SECS + 1:
    raise ValueError(f'seconds must be >= {2 * MARGIN_SECS + 1} (keyframes keep {MARGIN_SECS} s from the ends)')
  ann = storage.join(root, 'annotations')
  for folder in ('frames', 'frame_lists', 'videos', 'annotations/person_box_67091280_iou90'):
    storage.makedirs(storage.join(root, folder))
  header = 'original_vido_id video_id frame_id path labels\n'
  lists, gt, proposals = {'train': [header], 'val': [header]}, {'train': [], 'val': []}, {'train': [], 'val': []}
  videos = [f'video{i:03d}' for i in range(num_videos)]
  for index, video in enumerate(videos):
    split = 'val' if index >= num_videos - num_val_videos else 'train'
    rng = np.random.default_rng([seed, index])
    frames, boxes = _video(rng, seconds=seconds, fps=fps, height=height, width=width, people=people, noise=noise)
    storage.makedirs(storage.join(root, 'frames', video))
    for t, frame in enumerate(frames):
      rel = f'{video}/{video}_{t + 1:06d}.jpg'
      data = io.BytesIO()
      Image.fromarray(frame).save(data, format='JPEG', quality=95)
      storage.write_bytes(storage.join(root, 'frames', rel), data.getvalue())
      lists[split].append(f'{video} {index} {t} {rel} ""\n')
    synthetic.write_video_file(storage.join(root, 'videos', f'{video}.mp4'), frames, fps=fps, gop=int(fps))
    for sec in range(START_SEC + MARGIN_SECS, START_SEC + seconds - MARGIN_SECS + 1):
      people_here = boxes[int(round((sec - START_SEC) * fps))]
      annotated = [(box, actions) for box, actions in people_here if actions]
      for person_id, (box, actions) in enumerate(annotated):
        gt[split] += _box_rows(video, sec, box, actions, person_id)
      detected = [_jitter(box, rng, 0.02) for box, _ in people_here]  # IoU > 0.9 with their person.
      detected += [_jitter(box, rng, 0.25) for box, _ in annotated[:1]]  # A loose box: mostly IoU < 0.9.
      detected += [_random_box(rng) for _ in range(2)]  # Background and clutter.
      scores = [rng.uniform(0.85, 1.0) for _ in people_here] + [rng.uniform(0.5, 1.0) for _ in detected[
          len(people_here):]]
      labels = ava.label_proposals(np.array(detected), np.array([b for b, _ in annotated]).reshape(-1, 4),
                                   [a for _, a in annotated])
      for box, actions, score in zip(detected, labels, scores):
        proposals[split] += _box_rows(video, sec, box, actions, f'{score:.3f}')
  for split in ('train', 'val'):
    storage.write_text(storage.join(root, 'frame_lists', f'{split}.csv'), ''.join(lists[split]))
  storage.write_text(storage.join(ann, TRAIN_GT), ''.join(gt['train']))
  storage.write_text(storage.join(ann, TRAIN_PROPOSALS), ''.join(proposals['train']))
  storage.write_text(storage.join(ann, VAL_GT), ''.join(gt['val']))
  storage.write_text(storage.join(ann, VAL_DETECTIONS), ''.join(proposals['val']))
  storage.write_text(storage.join(ann, LABEL_MAP),
                     ''.join(f'item {{\n  name: "{name}"\n  id: {i + 1}\n}}\n' for i, name in enumerate(ACTIONS)))
  storage.write_text(storage.join(ann, EXCLUSIONS), f'{videos[-1]},{START_SEC + seconds - MARGIN_SECS}\n')
  return videos


def configure(data_config, root: str, *, fps: float = 10, videos: bool = False) -> None:
  """Points `data_config`'s ava_* keys at a data set write_dataset(root, fps=fps) wrote: its frames, or with
  `videos` its mp4 files."""
  d = data_config
  d.dataset_kind = 'ava'
  d.ava_frame_dir = '' if videos else storage.join(root, 'frames')
  d.ava_video_dir = storage.join(root, 'videos') if videos else ''
  d.ava_frame_list_dir = storage.join(root, 'frame_lists')
  d.ava_annotation_dir = storage.join(root, 'annotations')
  d.ava_train_gt_boxes, d.ava_train_proposals = TRAIN_GT, TRAIN_PROPOSALS
  d.ava_val_gt, d.ava_val_detections = VAL_GT, VAL_DETECTIONS
  d.ava_label_map, d.ava_exclusions = LABEL_MAP, EXCLUSIONS
  d.ava_fps = float(fps)
  d.ava_frame_start_sec = d.ava_video_start_sec = START_SEC


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  videos = write_dataset(FLAGS.out, num_videos=FLAGS.num_videos, num_val_videos=FLAGS.num_val_videos,
                         seconds=FLAGS.seconds, fps=FLAGS.fps, height=FLAGS.height, width=FLAGS.width,
                         seed=FLAGS.seed)
  print(f'wrote {len(videos)} videos ({FLAGS.num_val_videos} val) to {FLAGS.out}')


def _define_flags():
  """Command-line flags, defined only when run as a program (importing the module defines none)."""
  flags.DEFINE_string('out', None, 'Output folder.', required=True)
  flags.DEFINE_integer('num_videos', 12, 'Videos in all.')
  flags.DEFINE_integer('num_val_videos', 4, 'Of which val.')
  flags.DEFINE_integer('seconds', 8, 'Seconds per video.')
  flags.DEFINE_float('fps', 10.0, 'Frame rate.')
  flags.DEFINE_integer('height', 96, 'Frame height (even).')
  flags.DEFINE_integer('width', 128, 'Frame width (even).')
  flags.DEFINE_integer('seed', 0, 'Random seed.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
