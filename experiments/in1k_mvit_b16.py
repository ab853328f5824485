r"""MViT-B-16 (conv pooling) on ImageNet-1K from scratch, DeiT-style recipe (paper App. D.5, Table 17).

Target: 83.0% top-1 (paper Table 17), centre crop 224 of a 256-short-side image, 7.8 GFLOPs.

  python -m mvit_jax.main --config experiments/in1k_mvit_b16.py --workdir gs://BUCKET/in1k_mvit_b16 \
      --config.data.tfds_data_dir=/data/tensorflow_datasets

Images are one-frame clips (T=1) read from the prepared TFDS `imagenet2012` dataset (never downloaded here).
Recipe (PySlowFast configs/ImageNet/MVIT_B_16_CONV.yaml): AdamW, LR 5e-4 per 512 images, 70 warm-up epochs then
cosine to 2e-6 per 512 images at 300 epochs, weight decay 0.05, clipping 1.0, label smoothing 0.1, Mixup 0.8 /
CutMix 1.0, RandAugment m9-n6-mstd0.5, random erasing 0.25, drop path 0.1, no head dropout, ImageNet mean/std.
"""
from mvit_jax.train import config as config_lib


def get_config():
  return config_lib.imagenet_recipe('mvit_b16_in1k', drop_path_rate=0.1, base_lr=5e-4, end_lr=2e-6, weight_decay=0.05,
                                    batch_size=4096, epochs=300, warmup_epochs=70)
