"""`python -m mvit_jax.ava_eval`: runs `mvit_jax.train.ava_eval` (its docstring documents the command)."""
from mvit_jax.system import cli
from mvit_jax.train import ava_eval

if __name__ == '__main__':
  ava_eval.define_flags()
  cli.run(ava_eval.main)
