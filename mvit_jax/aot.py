"""`python -m mvit_jax.aot`: runs `mvit_jax.tools.aot` (its docstring documents the command)."""
from mvit_jax.tools.aot import main
from mvit_jax.system import cli

if __name__ == '__main__':
  cli.run(main)
