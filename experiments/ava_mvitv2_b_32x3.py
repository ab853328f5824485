r"""MViTv2-B 32x3 AVA v2.2 action detection, fine-tuned from the Kinetics model (Li et al. 2022, Table 8 / A.2 and
App. B.6).

Target (the paper's number, not one measured here): 28.1 mAP centre, 29.0 full frame (K400 pretraining; 29.9 / 30.5
from K600); one clip per keyframe, 225 GFLOPs per clip.

  python -m mvit_jax.main --config experiments/ava_mvitv2_b_32x3.py --workdir gs://BUCKET/ava_mvitv2_b_32x3 \
      --config.init_from=gs://BUCKET/k400_mvitv2_b_32x3 --config.data.ava_frame_dir=/data/ava/frames \
      --config.data.ava_frame_list_dir=/data/ava/frame_lists --config.data.ava_annotation_dir=/data/ava/annotations

`init_from`: the Kinetics-400 MViTv2-B 32x3 (a workdir of experiments/k400_mvitv2_b_32x3.py or a converted PySlowFast /
torchvision checkpoint folder); its head is replaced by a fresh 80-class one. Test view: the centre crop (the
papers' protocol); `--config experiments/ava_mvitv2_b_32x3.py:full` scores the full frame (short side 224) instead. Data
layout, evaluation and what differs from PySlowFast: docs/detection.md.

Recipe (`config.ava_recipe`): SGD momentum 0.9, LR 0.6 per 512 clips (peak, scaled with the batch), 5 warm-up
epochs, cosine over 30 epochs of ~211k keyframes, weight decay 1e-8, drop path 0.4, head dropout 0.5, bfloat16.
"""
from mvit_jax.train import config as config_lib


def get_config(test_view: str = ''):
  return config_lib.ava_recipe('mvitv2_b_32x3', num_frames=32, sampling_rate=3, test_view=test_view)
