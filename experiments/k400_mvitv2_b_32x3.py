r"""MViTv2-B 32x3 on Kinetics-400 from scratch (Li et al. 2022, App. B.4: the MViT-B recipe).

Target: 82.9% top-1 / 95.7% top-5 (paper Table 10), 5 clips x 1 centre crop, 225 GFLOPs per view.

  python -m mvit_jax.main --config experiments/k400_mvitv2_b_32x3.py --workdir gs://BUCKET/k400_mvitv2_b_32x3 \
      --config.data.root=/data/kinetics400 --config.data.train_manifest=/data/kinetics400/train.csv \
      --config.data.eval_manifest=/data/kinetics400/val.csv --config.data.classes_file=/data/kinetics400/classes.txt

Recipe as experiments/k400_mvit_b.py (AdamW, peak LR 1.6e-3 per 512 clips, 30 warm-up epochs, cosine to 200
epochs, weight decay 0.05 not on 1-D parameters, clipping 1.0, Mixup/CutMix, RandAugment, random erasing, 2
repeated augmentations, head dropout 0.5, bfloat16) with drop path 0.3.
"""
from mvit_jax.train import config as config_lib

K400_TRAIN_VIDEOS = 240_000  # Set to the number of lines of your train.csv (YouTube removals shrink the set).


def get_config():
  return config_lib.kinetics_recipe('mvitv2_b_32x3', num_classes=400, num_frames=32, sampling_rate=3,
                                    drop_path_rate=0.3, num_train_videos=K400_TRAIN_VIDEOS,
                                    remat_policy='dots_saveable')
