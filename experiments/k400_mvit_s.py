r"""MViT-S 16x4 on Kinetics-400 from scratch (paper Table 3c architecture, Kinetics recipe of k400_mvit_b.py).

Target: 76.0% top-1 / 92.1% top-5 (paper Table 4), 5 clips x 1 crop, 32.9 GFLOPs per view.

  python -m mvit_jax.main --config experiments/k400_mvit_s.py --workdir gs://BUCKET/k400_mvit_s \
      --config.data.root=/data/kinetics400 --config.data.train_manifest=/data/kinetics400/train.csv \
      --config.data.eval_manifest=/data/kinetics400/val.csv --config.data.classes_file=/data/kinetics400/classes.txt

No public PySlowFast config exists for MViT-S (SlowFast #459); drop path 0.1 is this project's choice for the
smaller model, everything else is the MViT-B recipe.
"""
from mvit_jax import config_lib

K400_TRAIN_VIDEOS = 240_000  # Set to the number of lines of your train.csv.


def get_config():
  c = config_lib.base_config()
  c.model.name = 'mvit_s_16x4'
  c.model.drop_path_rate = 0.1
  c.model.head_dropout_rate = 0.5
  c.half_precision = True

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
  d.num_frames, d.sampling_rate = 16, 4
  d.test_num_clips, d.test_num_crops = 5, 1
  d.num_repeated_samples = 2
  return config_lib.set_epochs(c, num_train_videos=K400_TRAIN_VIDEOS, epochs=200, warmup_epochs=30,
                               eval_every_epochs=20)
