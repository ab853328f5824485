r"""Fine-tune a converted checkpoint or a training workdir on your own videos (docs/finetune.md).

  python -m mvit_jax.main --config experiments/finetune.py:/ckpt/mvit_v1_b --workdir /runs/my_videos \
      --config.data.root=/data/my_videos

The part after `finetune.py:` is `config.init_from` (required): its model card gives the architecture and the
input recipe (frames, sampling, crop, mean/std, test views); the head is replaced by a fresh one with as many
classes as the data has. Data: a folder of class folders (`ROOT/<class>/<video>`, or `ROOT/train/...` +
`ROOT/val/...`); for a manifest add `--config.data.dataset_kind=manifest` and the manifest keys.

Schedule: a fine-tune's, short and gentle: AdamW at 1e-4 per 32 clips (peak), 10% of the steps a linear warm-up
from 1e-6, cosine to 1e-6 over 2000 steps of 32 clips, weight decay 0.05, layer-wise LR decay 0.75 (each block
0.75x the LR of the one above it, the patch embedding 0.75 ** (depth + 1) of the head's; MAE fine-tunes ViT-L
with 0.75, BEiT-style), drop path 0.1, head dropout 0.5, label smoothing 0.1, no mixup. `--config.train_only=head`
(a linear probe), `last_stage` or parameter patterns freeze the rest (`python -m mvit_jax.train.optim MODEL` lists
the names); scale `num_train_steps` to about 10-30 epochs of your data.
"""
from mvit_jax.models import model_card
from mvit_jax.train import config as config_lib


def get_config(init_from: str = ''):
  c = config_lib.base_config()
  c.init_from = init_from
  c.train_only = 'all'
  c.model.name = 'mvit_b_16x4'
  c.model.drop_path_rate = 0.1
  c.model.head_dropout_rate = 0.5

  c.num_train_steps = 2000
  c.batch_size = 32
  c.eval_batch_size = 32
  c.log_every_steps = 20
  c.checkpoint_every_steps = 500
  c.eval_every_steps = 500

  o = c.optimizer
  o.name = 'adamw'
  o.base_lr = 1e-4
  o.base_batch_size = 32
  o.warmup_start_lr = 1e-6
  o.end_lr = 1e-6
  o.warmup_steps = c.num_train_steps // 10
  o.weight_decay = 0.05
  o.layer_decay = 0.75
  o.grad_clip_norm = 1.0

  d = c.data
  d.dataset_kind = 'folder'
  d.num_repeated_samples = 1
  d.mixup_prob = 0.0
  d.label_smoothing = 0.1
  if init_from:
    card = model_card.read(init_from)
    c.model.name = card.name
    for key in ('num_frames', 'input_size'):
      if key in card.overrides:
        c.model[key] = card.overrides[key]
    if card.input is not None:
      card.input.apply_to(d)
  return c
