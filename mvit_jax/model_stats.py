"""`python -m mvit_jax.model_stats`: runs `mvit_jax.tools.model_stats` (its docstring documents the command)."""
from mvit_jax.tools.model_stats import main
from mvit_jax.system import cli

if __name__ == '__main__':
  cli.run(main)
