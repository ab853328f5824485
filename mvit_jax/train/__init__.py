"""Training: the config schema (`config`), the trainer (`trainer`: setup, train step, loop), optimizer (`optim`),
orbax checkpoints (`checkpointing`), device mesh and sharding rules (`sharding`), multi-view evaluation
(`evaluate`) and metric writers (`metrics`). `python -m mvit_jax.main` runs it."""
