r"""MViT-B 16x4 on Kinetics-400 from scratch, the paper's recipe (Fan et al. 2021, Sec. 4 and App. D.1).

Target: 78.4% top-1 / 93.5% top-5 (paper Table 4), 5 clips x 1 centre crop, 70.5 GFLOPs per view.

  python -m mvit_jax.main --config experiments/k400_mvit_b.py --workdir gs://BUCKET/k400_mvit_b \
      --config.data.root=/data/kinetics400 --config.data.train_manifest=/data/kinetics400/train.csv \
      --config.data.eval_manifest=/data/kinetics400/val.csv --config.data.classes_file=/data/kinetics400/classes.txt

Recipe: AdamW (0.9, 0.999), peak LR 1.6e-3 per 512 clips (linear scaling with the batch), 30 warm-up epochs from
1.6e-5 then half-cosine to 1.6e-5 at 200 epochs; weight decay 0.05 (not on biases and LayerNorm parameters);
global-norm clipping at 1.0; label smoothing 0.1; Mixup 0.8 / CutMix 1.0 (switch 0.5); RandAugment m7-n4-mstd0.5;
random erasing 0.25; Inception crop (area 0.08-1); 2 repeated augmentations per video (the 512 clips of a step are
256 videos x 2); drop path 0.2; head dropout 0.5; bfloat16 compute with float32 parameters and optimizer state.
Compute (H100-hours) and the CPU cores the loader needs: docs/training.md.
"""
from mvit_jax.train import config as config_lib

K400_TRAIN_VIDEOS = 240_000  # Set to the number of lines of your train.csv (YouTube removals shrink the set).


def get_config():
  return config_lib.kinetics_recipe('mvit_b_16x4', num_classes=400, num_frames=16, sampling_rate=4,
                                    drop_path_rate=0.2, num_train_videos=K400_TRAIN_VIDEOS)
