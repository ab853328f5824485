r"""MViT-B 16x4 fine-tuned on Something-Something v2 from a Kinetics-400 model (paper App. D.4, Table 6).

Target: 64.7% top-1 / 89.2% top-5 (paper Table 6, K400-pretrained MViT-B 16x4), 1 clip x 3 crops.

  python -m mvit_jax.main --config experiments/ssv2_mvit_b.py --workdir gs://BUCKET/ssv2_mvit_b \
      --config.init_from=/ckpt/mvit_b_16x4_k400 \
      --config.data.root=/data/ssv2 --config.data.train_manifest=/data/ssv2/train.csv \
      --config.data.eval_manifest=/data/ssv2/val.csv --config.data.classes_file=/data/ssv2/classes.txt

`init_from` is a converted checkpoint (`python -m mvit_jax.convert ...`) or a K400 training workdir; the 400-class
head is replaced by a fresh 174-class head. Recipe: SGD momentum 0.9, LR 0.02 per 512 clips, 3 warm-up epochs,
cosine over 100 epochs, weight decay 1e-4, drop path 0.4, no horizontal flip (labels such as "left to right"),
segment-based frame sampling, no repeated augmentation.
"""
from mvit_jax.train import config as config_lib


def get_config():
  return config_lib.ssv2_recipe('mvit_b_16x4')
