r"""MViT-B 32x3 on Kinetics-400 from scratch (paper recipe; PySlowFast MVIT_B_32x3_CONV.yaml uses drop path 0.3).

Target: 80.2% top-1 / 94.4% top-5 (paper Table 4), 5 clips x 1 crop, 170 GFLOPs per view.

  python -m mvit_jax.main --config experiments/k400_mvit_b_32x3.py --workdir gs://BUCKET/k400_mvit_b_32x3 \
      --config.data.root=/data/kinetics400 --config.data.train_manifest=/data/kinetics400/train.csv \
      --config.data.eval_manifest=/data/kinetics400/val.csv --config.data.classes_file=/data/kinetics400/classes.txt

Same recipe as k400_mvit_b.py with 32 frames at stride 3 and remat of every block ('dots_saveable') to fit the
doubled token count; ~2.4x the compute of 16x4.
"""
from mvit_jax import config_lib

K400_TRAIN_VIDEOS = 240_000  # Set to the number of lines of your train.csv.


def get_config():
  c = config_lib.base_config()
  c.model.name = 'mvit_b_32x3'
  c.model.drop_path_rate = 0.3
  c.model.head_dropout_rate = 0.5
  c.half_precision = True
  c.remat_policy = 'dots_saveable'

  c.batch_size = 512
  c.eval_batch_size = 256
  c.optimizer.name = 'adamw'
  c.optimizer.base_lr = 1.6e-3
  c.optimizer.base_batch_size = 512
  c.optimizer.warmup_start_lr = 1.6e-5
  c.optimizer.end_lr = 1.6e-5
  c.optimizer.weight_decay = 0.05

  d = c.data
  d.num_classes = 400
  d.num_frames, d.sampling_rate = 32, 3
  d.test_num_clips, d.test_num_crops = 5, 1
  d.num_repeated_samples = 2
  return config_lib.set_epochs(c, num_train_videos=K400_TRAIN_VIDEOS, epochs=200, warmup_epochs=30,
                               eval_every_epochs=20)
