r"""MViT-B 16x4 fine-tuned on Charades (multi-label, 157 classes) from a Kinetics-400 model (paper App. D.3).

Target: 40.0 mAP (paper Table 7, K400-pretrained MViT-B 16x4), 10 clips x 3 crops, scores max-pooled over views.

  python -m mvit_jax.main --config experiments/charades_mvit_b.py --workdir gs://BUCKET/charades_mvit_b \
      --config.init_from=/ckpt/mvit_b_16x4_k400 \
      --config.data.root=/data/charades --config.data.train_manifest=/data/charades/train.csv \
      --config.data.eval_manifest=/data/charades/val.csv

Manifest labels are comma-separated class ids (multi_label). Loss: per-class sigmoid binary cross-entropy.
Recipe: SGD, LR 0.6 per 256 clips with cosine over 200 epochs, weight decay 1e-7, drop path 0.45, Kinetics
augmentation without Mixup/CutMix.
"""
from mvit_jax.train import config as config_lib

CHARADES_TRAIN_VIDEOS = 7_985


def get_config():
  c = config_lib.base_config()
  c.model.name = 'mvit_b_16x4'
  c.model.drop_path_rate = 0.45
  c.model.head_dropout_rate = 0.5
  c.half_precision = True
  c.init_from = ''                  # Set on the command line: the K400 model to start from.

  c.batch_size = 256
  c.eval_batch_size = 240
  c.optimizer.name = 'sgd'
  c.optimizer.base_lr = 0.6
  c.optimizer.base_batch_size = 256
  c.optimizer.warmup_start_lr = 0.06
  c.optimizer.end_lr = 6e-4
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-7
  c.optimizer.grad_clip_norm = 0.0

  d = c.data
  d.num_classes = 157
  d.multi_label = True
  d.num_frames, d.sampling_rate = 16, 4
  d.num_repeated_samples = 1
  d.mixup_prob = 0.0
  d.label_smoothing = 0.0
  d.test_num_clips, d.test_num_crops = 10, 3
  d.test_short_side = 224
  return config_lib.set_epochs(c, num_train_videos=CHARADES_TRAIN_VIDEOS, epochs=200, warmup_epochs=2,
                               eval_every_epochs=20)
