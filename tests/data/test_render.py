"""mvit_jax.data.render: grids, text, heatmap overlays, image bytes and mp4 files."""
import io

import av
import numpy as np
from PIL import Image

from mvit_jax.data import render


def _frames(t, h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), np.uint8)


def test_frames_grid_places_enlarged_frames_under_titles():
  rows = [_frames(3, 8, 10, 0), _frames(2, 8, 10, 1)]
  sheet = render.frames_grid(rows, ['first', 'second'], min_cell=20)  # 8x10 -> 16x20 (k = 2).
  cell_h, cell_w = render.TITLE_HEIGHT + 16 + render.GAP, 20 + render.GAP
  assert sheet.shape == (2 * cell_h, 3 * cell_w, 3) and sheet.dtype == np.uint8
  top = cell_h + render.TITLE_HEIGHT  # Row 1, frame 1.
  np.testing.assert_array_equal(sheet[top:top + 16, cell_w:cell_w + 20], rows[1][1].repeat(2, 0).repeat(2, 1))
  assert (sheet[cell_h:cell_h + render.TITLE_HEIGHT] < 128).any()  # The title's black pixels.
  assert (sheet[top:top + 16, 2 * cell_w:] == 255).all()  # Row 1 has no third frame.
  untitled = render.frames_grid(rows)
  assert untitled.shape == (2 * (8 + render.GAP), 3 * (10 + render.GAP), 3)


def test_text_block_and_stacks():
  block = render.text_block(['a line', 'another'], 60)
  assert block.shape == (2 * render.TITLE_HEIGHT, 60, 3) and (block < 128).any() and (block == 255).any()
  a, b = np.zeros((10, 4, 3), np.uint8), np.zeros((6, 5, 3), np.uint8)
  side = render.hstack([a, b])
  assert side.shape == (10, 4 + render.GAP + 5, 3)
  assert (side[6:, 4 + render.GAP:] == 255).all() and (side[:6, 4 + render.GAP:] == 0).all()
  assert render.vstack([a, b]).shape == (10 + render.GAP + 6, 5, 3)


def test_overlay_heatmap_colours():
  frames = np.full((2, 4, 4, 3), 100, np.uint8)
  heat = np.zeros((2, 4, 4))
  heat[:, :, 2:] = 1.0
  out = render.overlay_heatmap(frames, heat, alpha=1.0)
  assert out.shape == frames.shape and out.dtype == np.uint8
  red, blue = out[0, 0, 3].astype(int), out[0, 0, 0].astype(int)
  assert red[0] > 100 and red[1:].max() < 50 and blue[2] > 100 and blue[:2].max() < 50  # JET: 0 blue, 1 red.
  np.testing.assert_array_equal(render.overlay_heatmap(frames, heat, alpha=0.0), frames)
  half = render.overlay_heatmap(frames, heat, alpha=0.5).astype(int)
  np.testing.assert_allclose(half, (frames.astype(int) + out) / 2, atol=1)


def test_encode_image_and_write_mp4(tmp_path):
  picture = _frames(1, 5, 7)[0]
  with Image.open(io.BytesIO(render.encode_image(picture, 'x.png'))) as image:
    assert image.format == 'PNG'
    np.testing.assert_array_equal(np.asarray(image), picture)
  path = str(tmp_path / 'clip.mp4')
  frames = np.stack([np.full((15, 21, 3), 20 * i, np.uint8) for i in range(6)])  # Odd sizes: padded to 16x22.
  render.write_mp4(path, frames, fps=5)
  with av.open(path) as container:
    decoded = np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])
  assert decoded.shape == (6, 16, 22, 3)
  np.testing.assert_allclose(decoded[:, :15, :21].mean(axis=(1, 2, 3)), 20 * np.arange(6), atol=3)


def test_draw_boxes_outlines_inside_the_box_and_labels_above():
  frames = np.full((2, 40, 50, 3), 200, np.uint8)
  boxes = np.array([[0.2, 0.5, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]])  # Pixels x 10-29, y 20-35; the whole frame.
  out = render.draw_boxes(frames, boxes, ['walk 0.9', ''], width=2)
  assert out.shape == frames.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(frames, 200)  # The input is left as it was.
  first, second = render.box_colour(0), render.box_colour(1)
  for t in range(2):
    np.testing.assert_array_equal(out[t, 20:36, 10:12], np.broadcast_to(first, (16, 2, 3)))  # Left edge.
    np.testing.assert_array_equal(out[t, 34:36, 12:30], np.broadcast_to(first, (2, 18, 3)))  # Bottom edge.
    np.testing.assert_array_equal(out[t, 22:34, 12:28], 200)  # Inside stays the frame.
    np.testing.assert_array_equal(out[t, 0:2, 2:48], np.broadcast_to(second, (2, 46, 3)))  # The frame's top row.
    label = out[t, 20 - render.TITLE_HEIGHT:20, 10:30]  # The label: white text on the box's colour above it.
    assert (label == first).all(axis=-1).mean() > 0.5 and (label.min(axis=-1) > 200).any()
  np.testing.assert_array_equal(render.draw_boxes(frames[0], np.zeros((0, 4))), frames[0])


def test_mp4_writer_takes_frames_in_pieces(tmp_path):
  path = str(tmp_path / 'pieces.mp4')
  with render.Mp4Writer(path, fps=10) as writer:
    writer.write(np.full((3, 16, 24, 3), 40, np.uint8))
    writer.write(np.full((16, 24, 3), 200, np.uint8))
  assert writer.num_frames == 4
  with av.open(path) as container:
    decoded = np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])
  np.testing.assert_allclose(decoded.mean(axis=(1, 2, 3)), [40, 40, 40, 200], atol=3)
  with render.Mp4Writer(str(tmp_path / 'none.mp4'), fps=10):
    pass
  assert not (tmp_path / 'none.mp4').exists()
