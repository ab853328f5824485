r"""MViTv2-S 16x4 fine-tuned on Something-Something v2 from a Kinetics-400 model (Li et al. 2022, App. B.5).

Target: 68.2% top-1 / 91.4% top-5 (paper Table 12, K400-pretrained MViTv2-S 16x4), 1 clip x 3 crops.

  python -m mvit_jax.main --config experiments/ssv2_mvitv2_s.py --workdir gs://BUCKET/ssv2_mvitv2_s \
      --config.init_from=/ckpt/mvitv2_s_16x4_k400 \
      --config.data.root=/data/ssv2 --config.data.train_manifest=/data/ssv2/train.csv \
      --config.data.eval_manifest=/data/ssv2/val.csv --config.data.classes_file=/data/ssv2/classes.txt

`init_from` is a converted checkpoint (`python -m mvit_jax.convert --from torchvision ...`) or a K400
training workdir (experiments/k400_mvitv2_s.py); the 400-class head is replaced by a fresh 174-class head. Recipe:
config_lib.ssv2_recipe (SGD, LR 0.02 per 512 clips, 100 epochs, drop path 0.4, no flip, segment sampling). A model
converted from PySlowFast's SSv2 weights expects BGR input (its REVERSE_INPUT_CHANNEL); one fine-tuned here takes RGB.
"""
from mvit_jax.train import config as config_lib


def get_config():
  return config_lib.ssv2_recipe('mvitv2_s_16x4')
