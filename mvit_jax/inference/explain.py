"""Class-activation heatmaps for MViT: where in a clip the evidence for a class lies.

    cam = Heatmap(predictor, layer='first', method='hirescam')
    heat = cam(views, classes)    # uint8 (B, T, H, W, 3), int (B,) -> float32 (B, T, H, W) in [0, 1]

The explained activations A are a (T', H', W', C) token grid (class token dropped), with g = d logit_class / d A:
  - layer 'last': the tokens entering the model's last block: the last stage's grid, or the one before where the
    last stage is a single pooling block (mvit_tiny). The last block's own output cannot serve: a class-token
    model reads only the class token after it, so its grid tokens get no gradient; entering the last block, they
    reach the class token through its attention.
  - layer 'first': the tokens entering the first block (the patch embedding's grid, stride 4): their gradient
    holds every path to the class token, through all blocks' attention, which a class-token model uses to gather
    its evidence long before the last block.
  - method 'gradcam' (Selvaraju et al., ICCV 2017): cam = relu(sum_c w_c A_c), w_c = the mean of g_c over the grid.
  - method 'hirescam' (Draelos & Carin, 2020): cam = relu(sum_c g_c A_c) token by token, which, unlike one weight
    per channel, follows where the gradient is.
The cam is trilinearly upsampled to the clip's frames and divided by its maximum (all zero where no token raises
the logit). The defaults, HiResCAM on the first layer, are the combination that finds known evidence: the
moving region of clips where only it tells the classes apart (scripts/heatmap_sanity.py; docs/inference.md).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvit_jax.data import device_preprocess
from mvit_jax.models import layout
from mvit_jax.models.config import block_specs
from mvit_jax.models.mvit import MViT
from mvit_jax.system.errors import InputError


LAYERS = ('first', 'last')
METHODS = {'hirescam': 'HiResCAM', 'gradcam': 'Grad-CAM'}  # Name -> the title pictures give it.


class Heatmap:
  """A class-activation heatmap (Grad-CAM or HiResCAM) of a predictor's model (any MViT variant, video or image)
  at the tokens entering its last or first block, jitted once per batch shape."""

  def __init__(self, predictor, *, layer: str = 'first', method: str = 'hirescam'):
    if layer not in LAYERS:
      raise InputError(f'--explain_layer {layer!r}: one of {", ".join(LAYERS)}')
    if method not in METHODS:
      raise InputError(f'--explain_method {method!r}: one of {", ".join(METHODS)}')
    self.method, self.title = method, METHODS[method]
    # The gradient is taken at one block's input: every block its own module, and no rematerialisation.
    config = dataclasses.replace(predictor.module.config, scan_blocks=False, remat_policy=None)
    self.module, self.config = MViT(config), config
    self.params = layout.to_block_layout(predictor.params, config)
    self.data_config = data = predictor.data_config
    self._explained = f'blocks_{len(block_specs(config)) - 1 if layer == "last" else 0}'
    self._jitted = jax.jit(self._cams)
    t, h, w = self.grid((1, data.num_frames, data.crop_size, data.crop_size, 3))
    if h * w < 2:
      raise InputError(f'{self.title} needs a spatial token grid: {predictor.card.name} on {data.crop_size}x'
                       f'{data.crop_size} frames has a {t}x{h}x{w} grid entering its {layer} block')

  def grid(self, views_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(T', H', W') of the explained tokens for uint8 views of shape (B, T, H, W, 3)."""
    videos = jax.ShapeDtypeStruct(views_shape, jnp.uint8)
    return jax.eval_shape(self._forward, self.params, videos, None)[2].shape[1:4]

  def __call__(self, views: np.ndarray, classes) -> np.ndarray:
    """uint8 views (B, T, H, W, 3) and the class to explain in each (B,) -> float32 (B, T, H, W) in [0, 1]."""
    return np.asarray(self._jitted(self.params, views, jnp.asarray(classes, jnp.int32)))

  def _forward(self, params, views, delta):
    """(logits (B, classes), tokens entering the explained block (B, L, C), their grid (B, T', H', W', C) float32),
    with `delta` (B, L, C) (or None) added to the entering tokens, so that d logits / d delta is the gradient at
    them."""
    captured = {}

    def add_delta(next_fun, args, kwargs, context):
      if context.module.name != self._explained or context.method_name != '__call__':
        return next_fun(*args, **kwargs)
      x = args[0] if delta is None else args[0] + delta.astype(args[0].dtype)
      grid = x[:, 1:] if self.config.cls_token else x
      captured['x'] = x
      captured['grid'] = grid.reshape(x.shape[0], *context.module.thw, x.shape[-1]).astype(jnp.float32)
      return next_fun(x, *args[1:], **kwargs)

    videos = device_preprocess.preprocess_on_device(views, None, self.data_config, train=False)
    with nn.intercept_methods(add_delta):
      logits = self.module.apply({'params': params}, videos)
    return logits, captured['x'], captured['grid']

  def _cams(self, params, views, classes):
    entering = jax.eval_shape(self._forward, params, views, None)[1]

    def chosen_logit(delta):
      logits, _, grid = self._forward(params, views, delta)
      return jnp.take_along_axis(logits, classes[:, None], axis=1).sum(), grid

    # Views are independent (layer norms only): the summed logit's gradient holds each view's own.
    grads, grid = jax.grad(chosen_logit, has_aux=True)(jnp.zeros(entering.shape, jnp.float32))
    grads = (grads[:, 1:] if self.config.cls_token else grads).reshape(grid.shape)
    if self.method == 'gradcam':
      cam = jax.nn.relu(jnp.einsum('bthwc,bc->bthw', grid, grads.mean(axis=(1, 2, 3))))
    else:
      cam = jax.nn.relu(jnp.einsum('bthwc,bthwc->bthw', grid, grads))
    cam = jax.image.resize(cam, views.shape[:4], 'linear')
    peak = cam.max(axis=(1, 2, 3), keepdims=True)
    return jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
