"""`python -m mvit_jax.predict`: runs `mvit_jax.inference.predict` (its docstring documents the command)."""
from mvit_jax.inference import predict
from mvit_jax.system import cli

if __name__ == '__main__':
  predict.define_flags()
  cli.run(predict.main)
