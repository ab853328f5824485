"""Command-line tools around the model: weight converters (`convert`, `convert_card`), ahead-of-time TPU compiles
(`aot`) and parameter / FLOP tables (`model_stats`). Each runs as `python -m mvit_jax.<name>`."""
