r"""MViT-B-24 32x3 on Kinetics-600 from scratch (paper Table 5; PySlowFast MVIT_B_32x3_CONV.yaml B-24 layout).

Target: 83.8% top-1 / 96.3% top-5 (paper Table 5), 5 clips x 1 crop, 236 GFLOPs per view, 52.9M parameters.

  python -m mvit_jax.main --config experiments/k600_mvit_b24_32x3.py --workdir gs://BUCKET/k600_mvit_b24 \
      --config.data.root=/data/kinetics600 --config.data.train_manifest=/data/kinetics600/train.csv \
      --config.data.eval_manifest=/data/kinetics600/val.csv --config.data.classes_file=/data/kinetics600/classes.txt

Kinetics recipe of k400_mvit_b.py (the paper uses identical hyper-parameters for K600) with drop path 0.3 and
per-block remat.
"""
from mvit_jax.train import config as config_lib

K600_TRAIN_VIDEOS = 380_000  # Set to the number of lines of your train.csv.


def get_config():
  return config_lib.kinetics_recipe('mvit_b24_32x3', num_classes=600, num_frames=32, sampling_rate=3,
                                    drop_path_rate=0.3, num_train_videos=K600_TRAIN_VIDEOS,
                                    remat_policy='dots_saveable')
