r"""MViT-B 32x3 on Kinetics-400 from scratch (paper recipe; PySlowFast MVIT_B_32x3_CONV.yaml uses drop path 0.3).

Target: 80.2% top-1 / 94.4% top-5 (paper Table 4), 5 clips x 1 crop, 170 GFLOPs per view.

  python -m mvit_jax.main --config experiments/k400_mvit_b_32x3.py --workdir gs://BUCKET/k400_mvit_b_32x3 \
      --config.data.root=/data/kinetics400 --config.data.train_manifest=/data/kinetics400/train.csv \
      --config.data.eval_manifest=/data/kinetics400/val.csv --config.data.classes_file=/data/kinetics400/classes.txt

Same recipe as k400_mvit_b.py with 32 frames at stride 3 and remat of every block ('dots_saveable') to fit the
doubled token count; ~2.4x the compute of 16x4.
"""
from mvit_jax.train import config as config_lib

K400_TRAIN_VIDEOS = 240_000  # Set to the number of lines of your train.csv.


def get_config():
  return config_lib.kinetics_recipe('mvit_b_32x3', num_classes=400, num_frames=32, sampling_rate=3,
                                    drop_path_rate=0.3, num_train_videos=K400_TRAIN_VIDEOS,
                                    remat_policy='dots_saveable')
