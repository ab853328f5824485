r"""MViT-B 16x4 fine-tuned on Something-Something v2 from a Kinetics-400 model (paper App. D.4, Table 6).

Target: 64.7% top-1 / 89.2% top-5 (paper Table 6, K400-pretrained MViT-B 16x4), 1 clip x 3 crops.

  python -m mvit_jax.main --config experiments/ssv2_mvit_b.py --workdir gs://BUCKET/ssv2_mvit_b \
      --config.init_from=/ckpt/mvit_b_16x4_k400 \
      --config.data.root=/data/ssv2 --config.data.train_manifest=/data/ssv2/train.csv \
      --config.data.eval_manifest=/data/ssv2/val.csv --config.data.classes_file=/data/ssv2/classes.txt

`init_from` is a converted checkpoint (`python -m mvit_jax.convert ...`) or a K400 training workdir; the 400-class
head is replaced by a fresh 174-class head. Recipe: SGD momentum 0.9, LR 0.02 per 512 clips, 3 warm-up epochs,
cosine over 100 epochs, weight decay 1e-4, drop path 0.4, no horizontal flip (labels such as "left to right"),
segment-based frame sampling, no repeated augmentation.
"""
from mvit_jax import config_lib

SSV2_TRAIN_VIDEOS = 168_913


def get_config():
  c = config_lib.base_config()
  c.model.name = 'mvit_b_16x4'
  c.model.drop_path_rate = 0.4
  c.model.head_dropout_rate = 0.5
  c.half_precision = True
  c.init_from = ''                  # Set on the command line: the K400 model to start from.

  c.batch_size = 512
  c.eval_batch_size = 192
  c.optimizer.name = 'sgd'
  c.optimizer.base_lr = 0.02
  c.optimizer.base_batch_size = 512
  c.optimizer.warmup_start_lr = 8e-4
  c.optimizer.end_lr = 2e-4
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip_norm = 0.0

  d = c.data
  d.num_classes = 174
  d.num_frames = 16
  d.segment_sampling = True
  d.random_flip = False
  d.num_repeated_samples = 1
  d.test_num_clips, d.test_num_crops = 1, 3
  d.test_short_side = 224           # Three 224 crops along the long side of a 224-short-side frame.
  return config_lib.set_epochs(c, num_train_videos=SSV2_TRAIN_VIDEOS, epochs=100, warmup_epochs=3,
                               eval_every_epochs=10)
