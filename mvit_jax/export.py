"""`python -m mvit_jax.export`: runs `mvit_jax.inference.export` (its docstring documents the command)."""
from mvit_jax.inference.export import main
from mvit_jax.system import cli

if __name__ == '__main__':
  cli.run(main)
