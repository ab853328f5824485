r"""Demo: a tiny MViT trained on synthetic motion videos on a laptop CPU in a few minutes.

Command (fresh checkout, after `pip install -e .`):

  python -m mvit_jax.main --config experiments/demo.py --workdir /tmp/mvit_demo

The run writes 160 synthetic H.264 clips (4 motion classes: up, down, sideways, still; 120 train / 40 val) into
WORKDIR/synthetic_data when they are missing, trains `mvit_tiny` (8x48x48 input, 4 blocks) for 300 steps of 16
clips, evaluates with 2 temporal clips per video (softmax averaged per video) and writes TensorBoard events,
checkpoints, WORKDIR/eval/predictions_300.csv and WORKDIR/metrics.json. The accuracy and wall time it reaches
(chance: 25% top-1) are in docs/performance.md.
"""
from mvit_jax.train import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.synthetic_data.enabled = True
  c.synthetic_data.num_classes = 4
  c.synthetic_data.videos_per_class = 40

  c.model.name = 'mvit_tiny'
  c.model.drop_path_rate = 0.0
  c.half_precision = False            # bfloat16 matmuls are slower than float32 on most CPUs.

  c.num_train_steps = 300
  c.batch_size = 16
  c.eval_batch_size = 16
  c.log_every_steps = 20
  c.checkpoint_every_steps = 100
  c.eval_every_steps = 0              # Evaluate once, after the last step.

  c.optimizer.name = 'adamw'
  c.optimizer.base_lr = 1e-3
  c.optimizer.base_batch_size = 16
  c.optimizer.warmup_start_lr = 1e-5
  c.optimizer.end_lr = 1e-5
  c.optimizer.warmup_steps = 30
  c.optimizer.weight_decay = 0.05

  d = c.data
  d.num_frames = 8
  d.sampling_rate = 2
  d.target_fps = 10.0                 # The synthetic clips are 32 frames at 10 fps: a clip spans 16 of them.
  d.test_num_clips = 2
  d.test_num_crops = 1
  d.train_short_side = 0              # Keep the native 48x64 frames.
  d.test_short_side = 48
  d.crop_size = 48
  d.random_resized_crop = False
  d.train_jitter_scales = (48, 56)
  d.randaugment = False
  d.random_erasing_prob = 0.0
  d.num_repeated_samples = 1
  d.mixup_prob = 0.0
  d.label_smoothing = 0.1
  d.num_workers = 1
  return c
