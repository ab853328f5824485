r"""MViT-B-16 (conv pooling) on ImageNet-1K from scratch, DeiT-style recipe (paper App. D.5, Table 17).

Target: 83.0% top-1 (paper Table 17), centre crop 224 of a 256-short-side image, 7.8 GFLOPs.

  python -m mvit_jax.main --config experiments/in1k_mvit_b16.py --workdir gs://BUCKET/in1k_mvit_b16 \
      --config.data.tfds_data_dir=/data/tensorflow_datasets

Images are one-frame clips (T=1) read from the prepared TFDS `imagenet2012` dataset (never downloaded here).
Recipe (PySlowFast configs/ImageNet/MVIT_B_16_CONV.yaml): AdamW, LR 5e-4 per 512 images, 70 warm-up epochs then
cosine to 2e-6 per 512 images at 300 epochs, weight decay 0.05, clipping 1.0, label smoothing 0.1, Mixup 0.8 /
CutMix 1.0, RandAugment m9-n6-mstd0.5, random erasing 0.25, drop path 0.1, no head dropout, ImageNet mean/std.
"""
from mvit_jax import config_lib

IN1K_TRAIN_IMAGES = 1_281_167


def get_config():
  c = config_lib.base_config()
  c.model.name = 'mvit_b16_in1k'
  c.model.drop_path_rate = 0.1
  c.model.head_dropout_rate = 0.0
  c.half_precision = True

  c.batch_size = 4096
  c.eval_batch_size = 1024
  c.optimizer.name = 'adamw'
  c.optimizer.base_lr = 5e-4
  c.optimizer.base_batch_size = 512
  c.optimizer.warmup_start_lr = 1e-8
  c.optimizer.end_lr = 2e-6
  c.optimizer.weight_decay = 0.05
  c.optimizer.grad_clip_norm = 1.0

  d = c.data
  d.dataset_kind = 'tfds'
  d.tfds_name = 'imagenet2012'
  d.tfds_train_split, d.tfds_eval_split = 'train', 'validation'
  d.tfds_video_key, d.tfds_label_key = 'image', 'label'
  d.num_classes = 1000
  d.num_frames, d.sampling_rate = 1, 1
  d.test_num_clips, d.test_num_crops = 1, 1
  d.num_repeated_samples = 1
  d.randaugment_num_layers, d.randaugment_magnitude = 6, 9
  d.mean, d.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  return config_lib.set_epochs(c, num_train_videos=IN1K_TRAIN_IMAGES, epochs=300, warmup_epochs=70,
                               eval_every_epochs=10)
