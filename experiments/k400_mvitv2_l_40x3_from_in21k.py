r"""MViTv2-L 40x3 at 312² on Kinetics-400, initialised from the ImageNet-21K MViTv2-L image model (Li et al. 2022,
§4.3 and App. B.4).

Target: 86.1% top-1 / 97.0% top-5 (paper Table 10, MViTv2-L↑312² 40x3, IN-21K), 5 clips x 3 crops at 312², 2828
GFLOPs per view.

1. Convert the IN-21K image model (the official repository's MViTv2_L_in21k.pyth, or timm's mvitv2_large_cls
   weights saved with torch.save(model.state_dict(), ...)):

  python -m mvit_jax.convert --from mvit --arch mvitv2_large_cls MViTv2_L_in21k.pyth /ckpt/mvitv2_large_in21k
  python -m mvit_jax.convert --from timm --arch mvitv2_large_cls mvitv2_large_cls.pth /ckpt/mvitv2_large_in21k

2. Train (init_from defaults to IN21K_CHECKPOINT below; --config.init_from=PATH points elsewhere):

  python -m mvit_jax.main --config experiments/k400_mvitv2_l_40x3_from_in21k.py \
      --workdir gs://BUCKET/k400_mvitv2_l_40x3_from_in21k --config.init_from=/ckpt/mvitv2_large_in21k \
      --config.data.root=/data/kinetics400 --config.data.train_manifest=/data/kinetics400/train.csv \
      --config.data.eval_manifest=/data/kinetics400/val.csv --config.data.classes_file=/data/kinetics400/classes.txt

The image model's 2-D stem and pooling kernels are inflated to 3-D with the 2-D kernel in the centre frame
(config.init_from_inflate), its relative position tables interpolated from 224² to 312², the temporal tables start
at zero (§4.3) and the 400-class head fresh, its class token is kept; the trainer logs one line listing each. Recipe: the
Kinetics recipe of experiments/k400_mvit_b.py with the IN-21K initialisation's schedule (App. B.4: 75 epochs, peak
LR 1.6e-4 per 512 clips; the warm-up length is not published: 5 epochs here) and PySlowFast's MVITv2_L_40x3 config
(drop path 0.75, head dropout 0.5, ImageNet mean/std as the image model, 312² crops, 3 test crops x 5 clips,
activation checkpointing). The paper reaches its number by first training a 16x4 model from the image model and then
fine-tuning 40x3 from it for 30 epochs; this file trains 40x3 from the image model in one run. Keep the videos'
native size or prepare them with a short side of at least 446, the jitter's upper end (scripts/prepare_videos.py
--short_side 446): the random-resized crops sample boxes of the decoded frames.
"""
from mvit_jax.train import config as config_lib

K400_TRAIN_VIDEOS = 240_000  # Set to the number of lines of your train.csv (YouTube removals shrink the set).
IN21K_CHECKPOINT = '/ckpt/mvitv2_large_in21k'  # The converted image model (step 1).


def get_config():
  c = config_lib.kinetics_recipe('mvitv2_l_40x3', num_classes=400, num_frames=40, sampling_rate=3,
                                 drop_path_rate=0.75, num_train_videos=K400_TRAIN_VIDEOS, remat_policy='full')
  c.init_from = IN21K_CHECKPOINT
  c.init_from_inflate = 'centre'
  c.optimizer.base_lr = 1.6e-4
  c.optimizer.warmup_start_lr = 1.6e-6
  c.optimizer.end_lr = 1.6e-6
  c.eval_batch_size = 64
  d = c.data
  d.crop_size = 312
  d.train_jitter_scales = (356, 446)
  d.test_short_side = 312           # Three 312² crops along the long side of a 312-short-side frame.
  d.test_num_clips, d.test_num_crops = 5, 3
  d.mean, d.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  return config_lib.set_epochs(c, num_train_videos=K400_TRAIN_VIDEOS, epochs=75, warmup_epochs=5,
                               eval_every_epochs=5)
