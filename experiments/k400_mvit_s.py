r"""MViT-S 16x4 on Kinetics-400 from scratch (paper Table 3c architecture, Kinetics recipe of k400_mvit_b.py).

Target: 76.0% top-1 / 92.1% top-5 (paper Table 4), 5 clips x 1 crop, 32.9 GFLOPs per view.

  python -m mvit_jax.main --config experiments/k400_mvit_s.py --workdir gs://BUCKET/k400_mvit_s \
      --config.data.root=/data/kinetics400 --config.data.train_manifest=/data/kinetics400/train.csv \
      --config.data.eval_manifest=/data/kinetics400/val.csv --config.data.classes_file=/data/kinetics400/classes.txt

No public PySlowFast config exists for MViT-S (SlowFast #459); drop path 0.1 is this project's choice for the
smaller model, everything else is the MViT-B recipe.
"""
from mvit_jax.train import config as config_lib

K400_TRAIN_VIDEOS = 240_000  # Set to the number of lines of your train.csv.


def get_config():
  return config_lib.kinetics_recipe('mvit_s_16x4', num_classes=400, num_frames=16, sampling_rate=4,
                                    drop_path_rate=0.1, num_train_videos=K400_TRAIN_VIDEOS)
