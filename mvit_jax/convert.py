"""`python -m mvit_jax.convert`: runs `mvit_jax.tools.convert` (its docstring documents the command)."""
from mvit_jax.tools.convert import main
from mvit_jax.system import cli

if __name__ == '__main__':
  cli.run(main)
