r"""Demo: a tiny MViT learns AVA-style action detection on synthetic people, on a CPU in a few minutes.

Command (fresh checkout, after `pip install -e .`):

  python -m mvit_jax.main --config experiments/ava_demo.py --workdir /tmp/mvit_ava_demo

The run writes a synthetic AVA data set in PySlowFast's layout into WORKDIR/synthetic_data when it is missing
(`mvit_jax.data.synthetic_ava`: 28 videos of 20 s at 10 fps, 64x80, 24 train / 4 val; people walk, run, jump or
wave, which only motion tells apart; an idle person and background boxes as negatives), trains `mvit_tiny` as a
detector (RoI head on the last stage, boxes = ground truth + proposals) on 8-frame clips, then runs it on the val
detections, writes WORKDIR/eval/detections_{step}.csv and scores it: metrics.json holds `mAP` and `per_class_AP`,
the same number `python -m mvit_jax.ava_eval` prints for that file. The mAP it reaches, chance and the wall time:
docs/detection.md.
"""
from mvit_jax.train import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.synthetic_data.enabled = True
  c.synthetic_data.height, c.synthetic_data.width = 64, 80
  c.synthetic_data.ava_num_videos = 28
  c.synthetic_data.ava_num_val_videos = 4
  c.synthetic_data.ava_seconds = 20
  c.synthetic_data.ava_fps = 10.0

  c.model.name = 'mvit_tiny'
  c.model.drop_path_rate = 0.0
  c.model.head_dropout_rate = 0.0
  c.half_precision = False            # bfloat16 matmuls are slower than float32 on most CPUs.

  c.num_train_steps = 300
  c.batch_size = 16
  c.eval_batch_size = 16
  c.log_every_steps = 20
  c.checkpoint_every_steps = 300
  c.eval_every_steps = 0              # Evaluate once, after the last step.

  o = c.optimizer
  o.name = 'adamw'
  o.base_lr = 1e-3
  o.base_batch_size = 16
  o.warmup_start_lr = 1e-5
  o.end_lr = 1e-5
  o.warmup_steps = 30
  o.weight_decay = 0.05

  d = c.data
  d.dataset_kind = 'ava'              # synthetic_ava.configure fills the ava_* paths.
  d.ava_max_boxes = 16
  d.num_frames = 8
  d.sampling_rate = 2                 # 16 frames at 10 fps: a 1.6 s clip around the keyframe.
  d.crop_size = 64
  d.random_resized_crop = False
  d.train_short_side = 0
  d.train_jitter_scales = (64, 72)
  d.random_flip = True
  d.randaugment = False
  d.random_erasing_prob = 0.0
  d.mixup_prob = 0.0
  d.label_smoothing = 0.0
  d.num_repeated_samples = 1
  d.ava_test_view = 'full'            # The whole 64x80 frame: no person is cut off at test.
  d.num_workers = 1
  return c
