r"""MViT-B 16x4 AVA v2.2 action detection, fine-tuned from the Kinetics model (Fan et al. 2021, Table 8 and App. D.2).

Target (the paper's number, not one measured here): 24.5 mAP (K400 pretraining; 26.1 from K600); one clip per
keyframe, 70.5 GFLOPs per clip.

  python -m mvit_jax.main --config experiments/ava_mvit_b_16x4.py --workdir gs://BUCKET/ava_mvit_b_16x4 \
      --config.init_from=gs://BUCKET/k400_mvit_b --config.data.ava_frame_dir=/data/ava/frames \
      --config.data.ava_frame_list_dir=/data/ava/frame_lists --config.data.ava_annotation_dir=/data/ava/annotations

`init_from`: the Kinetics-400 MViT-B 16x4 (a workdir of experiments/k400_mvit_b.py or a converted PySlowFast /
torchvision checkpoint folder); its head is replaced by a fresh 80-class one. Test view: the centre crop (the
papers' protocol); `--config experiments/ava_mvit_b_16x4.py:full` scores the full frame (short side 224) instead. Data
layout, evaluation and what differs from PySlowFast: docs/detection.md.

Recipe (`config.ava_recipe`): SGD momentum 0.9, LR 0.6 per 512 clips (peak, scaled with the batch), 5 warm-up
epochs, cosine over 30 epochs of ~211k keyframes, weight decay 1e-8, drop path 0.4, head dropout 0.5, bfloat16.
"""
from mvit_jax.train import config as config_lib


def get_config(test_view: str = ''):
  return config_lib.ava_recipe('mvit_b_16x4', num_frames=16, sampling_rate=4, test_view=test_view)
