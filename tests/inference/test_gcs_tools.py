"""The model, inference and tools side on bucket URLs (a real GCS server, fake-gcs-server): the model card,
load_pretrained on a converted folder and on a training workdir, convert, export and predict read and write gs://
as they do local folders, with the same results."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torchvision  # noqa: F401  (import before anything that may import tensorflow)

from mvit_jax.inference import export
from mvit_jax.inference import predict
from mvit_jax.models import model_card
from mvit_jax.models import pretrained
from mvit_jax.system import errors
from mvit_jax.system import files
from mvit_jax.system import storage
from mvit_jax.tools import convert
from tests import testlib


@pytest.fixture(scope='module')
def torch_file(tmp_path_factory):
  """A torchvision MViT with mvit_tiny's blocks (seeded random weights) saved as a state dict."""
  path = tmp_path_factory.mktemp('tv_tiny') / 'tiny.pth'
  torch.save(testlib.tiny_torchvision().state_dict(), path)
  return str(path)


@pytest.fixture(scope='module')
def local_model(torch_file, tmp_path_factory):
  """torch_file converted to a local folder."""
  out = str(tmp_path_factory.mktemp('converted') / 'model')
  convert.convert_file('torchvision', 'mvit_tiny', torch_file, out)
  return out


@pytest.fixture
def copied(monkeypatch):
  """The destinations of storage.copy_file, in the order of the copies."""
  destinations = []
  copy_file = storage.copy_file

  def record(src, dst):
    destinations.append(str(dst))
    copy_file(src, dst)

  monkeypatch.setattr(storage, 'copy_file', record)
  return destinations


def _assert_same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _arrays(path: str) -> dict[str, np.ndarray]:
  """{name: array} of an .npy file ('' names its array) or an .npz file, local or URL (an .npz's bytes hold the
  time it was written: its arrays are what compares)."""
  with storage.open_file(path, 'rb') as f:
    loaded = np.load(f)
    return {'': loaded} if isinstance(loaded, np.ndarray) else dict(loaded)


def test_model_card_in_a_bucket(bucket, tmp_path):
  card = model_card.ModelCard(name='mvit_tiny', overrides={'num_classes': 3}, classes=('a', 'b', 'c'))
  model_card.write(f'{bucket}/m', card)
  assert model_card.read(f'{bucket}/m') == card
  with pytest.raises(errors.InputError, match=f'^{bucket}/none: no model.json'):
    model_card.read(f'{bucket}/none')
  (tmp_path / 'f').write_bytes(b'abc' * 1000)
  storage.copy_file(str(tmp_path / 'f'), f'{bucket}/f')
  assert model_card.sha256(f'{bucket}/f') == model_card.sha256(str(tmp_path / 'f'))


def test_path_errors_on_urls(bucket):
  """The closest name in a bucket folder; a mistyped bucket gets no hint, and leaves the client's listings sound
  (listing 'gs://' itself would cache a bogus bucket list, after which folders in the bucket read as missing)."""
  storage.write_text(f'{bucket}/model/model.json', '{}')
  assert errors.did_you_mean_path(f'{bucket}/modle') == " (did you mean 'model'?)"
  assert errors.did_you_mean_path(f'{bucket}x') == ''
  storage.write_text(f'{bucket}/run/model.json', '{}')
  assert storage.isdir(f'{bucket}/run')
  with pytest.raises(errors.InputError, match=f"^--model: no such folder '{bucket}/modle' \\(did you mean 'model'"):
    errors.check_folder(f'{bucket}/modle', '--model')
  errors.check_folder(f'{bucket}/model', '--model')


def test_output_folder_must_be_missing_or_empty(bucket, tmp_path):
  assert files.is_missing_or_empty(f'{bucket}/out') and files.is_missing_or_empty(str(tmp_path))
  storage.write_text(f'{bucket}/out/x', '')
  (tmp_path / 'x').write_text('')
  assert not files.is_missing_or_empty(f'{bucket}/out') and not files.is_missing_or_empty(str(tmp_path))
  assert not files.is_missing_or_empty(f'{bucket}/out/x') and not files.is_missing_or_empty(str(tmp_path / 'x'))


def test_convert_from_and_to_a_bucket(bucket, torch_file, local_model, copied):
  """The same card and, bitwise, the same params as a local conversion; model.json is uploaded last."""
  source, out = f'{bucket}/zoo/tiny.pth', f'{bucket}/models/tiny'
  storage.copy_file(torch_file, source)
  copied.clear()
  convert.convert_file('torchvision', 'mvit_tiny', source, out)
  assert copied[-1] == f'{out}/{model_card.MODEL_JSON}' and len(copied) > 2
  assert model_card.read(out) == model_card.read(local_model)
  _, variables = pretrained.load_pretrained(out)
  _, expected = pretrained.load_pretrained(local_model)
  _assert_same_params(variables, expected)
  with pytest.raises(convert.ConversionError, match=f'^{out} exists and is not empty'):
    convert.convert_file('torchvision', 'mvit_tiny', source, out)
  with pytest.raises(convert.ConversionError, match=f'^{bucket}/zoo/missing.pth: no such file'):
    convert.convert_file('torchvision', 'mvit_tiny', f'{bucket}/zoo/missing.pth', f'{bucket}/models/other')
  assert not storage.exists(f'{bucket}/models/other')


def test_training_workdir_in_a_bucket(bucket, local_model):
  """load_pretrained on a gs:// workdir restores the params of its newest checkpoint, as the trainer saves them."""
  run = f'{bucket}/runs/a'
  model_card.write(run, model_card.read(local_model))
  _, variables = pretrained.load_pretrained(local_model)
  newest = variables['params']
  older = jax.tree.map(np.zeros_like, newest)
  with ocp.CheckpointManager(pretrained.checkpoint_dir(run), item_handlers={
      'params': ocp.StandardCheckpointHandler()}) as manager:
    for step, params in ((1, older), (2, newest)):
      manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
    manager.wait_until_finished()
  _, restored = pretrained.load_pretrained(run)
  _assert_same_params(restored, variables)


def test_export_from_and_to_a_bucket(bucket, local_model, copied):
  model, out = f'{bucket}/model', f'{bucket}/exported'
  storage.upload_tree(local_model, model)
  copied.clear()
  exported = export.export_model(model, out)
  assert copied[-1] == f'{out}/{export.EXPORT_JSON}'
  assert storage.files_under(out) == sorted([export.EXPORT_JSON, model_card.MODEL_JSON, export.STABLEHLO_FILE,
                                             export.WEIGHTS_FILE])
  assert storage.read_text(f'{out}/{model_card.MODEL_JSON}') == storage.read_text(f'{model}/{model_card.MODEL_JSON}')
  assert json.loads(storage.read_text(f'{out}/{export.EXPORT_JSON}'))['program'] == export.STABLEHLO_FILE
  assert storage.read_bytes(f'{out}/{export.STABLEHLO_FILE}') == exported.serialize()
  with storage.open_file(f'{out}/{export.WEIGHTS_FILE}', 'rb') as f, np.load(f) as weights:
    expected = export.flat_weights(pretrained.load_pretrained(local_model)[1]['params'])
    assert sorted(weights) == sorted(expected)
    for key, value in expected.items():
      np.testing.assert_array_equal(weights[key], value, err_msg=key)
  with pytest.raises(errors.InputError, match=f"^--out: '{out}' exists and is not an empty folder"):
    export.export_model(model, out)
  with pytest.raises(errors.InputError, match=f"^--model: no such folder '{bucket}/missing'"):
    export.export_model(f'{bucket}/missing', f'{bucket}/other')


def test_predict_finds_inputs_in_a_bucket(bucket):
  """Folders are searched recursively (sorted), manifests' relative paths join the manifest's folder, a file or a
  missing path is kept as named."""
  for rel in ('videos/b.mp4', 'videos/sub/a.MP4', 'videos/notes.txt'):
    storage.write_bytes(f'{bucket}/{rel}', b'')
  storage.write_text(f'{bucket}/lists/val.csv', 'clips/c.mp4 3\n')
  inputs = [f'{bucket}/videos', f'{bucket}/lists/val.csv', f'{bucket}/one.mp4']
  records = predict.find_inputs(inputs, ('.mp4',))
  assert [(r.path, r.label) for r in records] == [
      (f'{bucket}/videos/b.mp4', None), (f'{bucket}/videos/sub/a.MP4', None), (f'{bucket}/lists/clips/c.mp4', 3),
      (f'{bucket}/one.mp4', None)]
  storage.write_text(f'{bucket}/empty/notes.txt', '')
  with pytest.raises(errors.InputError, match=f'^{bucket}/empty: no files ending in .mp4'):
    predict.find_inputs([f'{bucket}/empty'], ('.mp4',))


@pytest.mark.slow
def test_predict_cli_on_a_bucket(bucket, gcs_server, local_model, tmp_path, tmp_path_factory):
  """`python -m mvit_jax.predict` with the model, the inputs, --output and --features in a bucket writes what it
  writes for the same local files (video paths aside)."""
  local = tmp_path / 'local'
  (local / 'videos').mkdir(parents=True)
  for name, video_id in (('a.mp4', 1), ('b.mp4', 2)):
    testlib.write_index_video(str(local / 'videos' / name), 40, video_id=video_id)
  (local / 'val.csv').write_text('videos/a.mp4 7\n')
  storage.upload_tree(str(local), f'{bucket}/data')
  storage.upload_tree(local_model, f'{bucket}/model')
  env = {**testlib.subprocess_env(str(tmp_path_factory.mktemp('jax_cache'))), **gcs_server.env}

  def run(model, root, out):
    inputs = [storage.join(root, 'videos'), storage.join(root, 'val.csv'), storage.join(root, 'videos', 'b.mp4'),
              storage.join(root, 'missing.mp4')]
    cmd = [sys.executable, '-m', 'mvit_jax.predict', f'--model={model}', *inputs, '--views=1x1', '--topk=3',
           f'--output={storage.join(out, "preds.jsonl")}', f'--features={storage.join(out, "feats")}', '--per_view',
           '--stages']
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return result

  local_run = run(local_model, str(local), str(tmp_path / 'out'))
  bucket_run = run(f'{bucket}/model', f'{bucket}/data', f'{bucket}/out')
  assert bucket_run.stdout == local_run.stdout.replace(str(local), f'{bucket}/data')
  for name in ('preds.jsonl', 'feats/index.jsonl'):
    expected = (tmp_path / 'out' / name).read_text().replace(str(local), f'{bucket}/data')
    assert storage.read_text(f'{bucket}/out/{name}') == expected
  lines = [json.loads(line) for line in storage.read_text(f'{bucket}/out/preds.jsonl').splitlines()]
  assert [line.get('label') for line in lines] == [None, None, 7, None, None]
  assert lines[0]['views'] == 1 and lines[-1]['error'] == 'missing file'
  feature_files = storage.files_under(f'{bucket}/out/feats')
  assert feature_files == sorted(os.listdir(tmp_path / 'out' / 'feats')) and len(feature_files) == 13
  for name in feature_files[:-1]:  # The last, index.jsonl, is compared above.
    _assert_same_params(_arrays(f'{bucket}/out/feats/{name}'), _arrays(str(tmp_path / 'out' / 'feats' / name)))
