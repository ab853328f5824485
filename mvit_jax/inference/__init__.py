"""Inference on model folders (a converted checkpoint or a training workdir) from Python.

    from mvit_jax import inference
    predictor = inference.load('/tmp/mvit_demo')

The predictor (`predictor`), the input recipes of converted checkpoints (`recipes`), the `predict` command,
action detection on person boxes (`detect`) and `export` (StableHLO / SavedModel).
"""
from mvit_jax.data.folder import VIDEO_EXTENSIONS
from mvit_jax.inference.predictor import average_views
from mvit_jax.inference.predictor import data_config
from mvit_jax.inference.predictor import eval_views
from mvit_jax.inference.predictor import IMAGE_EXTENSIONS
from mvit_jax.inference.predictor import ImageSource
from mvit_jax.inference.predictor import load
from mvit_jax.inference.predictor import parse_views
from mvit_jax.inference.predictor import Predictor
