"""Bad input to the command-line tools ends in one line on stderr naming the key or path (and the closest valid
name) with exit status 2 and no traceback, before anything compiles; internal errors keep their traceback."""
import os
import subprocess
import sys

import pytest

from mvit_jax.system import cli
from mvit_jax.system.errors import InputError
from tests import testlib

REPO = testlib.REPO
DEMO = os.path.join(REPO, 'experiments', 'demo.py')


def _run(*args):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def _main(workdir, *overrides, config=DEMO):
  return _run('-m', 'mvit_jax.main', '--config', config, '--workdir', str(workdir), *overrides)


def _assert_one_line_error(result, *fragments):
  """Exit status 2, nothing on stdout, exactly one non-empty stderr line holding every fragment."""
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1, result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  assert not result.stdout.strip(), result.stdout


@pytest.fixture
def data(tmp_path):
  """A data folder holding train.csv and val.csv (their content is never read: the errors fire first)."""
  folder = tmp_path / 'data'
  folder.mkdir()
  for name in ('train.csv', 'val.csv'):
    (folder / name).write_text('a.mp4 0\n')
  return folder


def _real_data(data):
  return ('--config.synthetic_data.enabled=False', f'--config.data.train_manifest={data / "train.csv"}',
          f'--config.data.eval_manifest={data / "val.csv"}')


@pytest.mark.slow
def test_unknown_key_names_the_closest_key_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  _assert_one_line_error(_main(workdir, '--config.batchsize=3'), 'config.batchsize', "'batch_size'")
  _assert_one_line_error(_main(workdir, '--config.optimizer.base_lrr=0.1'), 'config.optimizer.base_lrr',
                         "'base_lr'")
  assert not os.listdir(workdir)  # The run never started.


@pytest.mark.slow
def test_override_below_a_value_names_the_value(tmp_path):
  _assert_one_line_error(_main(tmp_path, '--config.optimizer.base_lr.x=1'), 'config.optimizer.base_lr is a value')


@pytest.mark.slow
def test_wrong_type_names_the_key(tmp_path):
  _assert_one_line_error(_main(tmp_path, '--config.batch_size=abc'), '--config.batch_size', 'abc')


@pytest.mark.slow
def test_unknown_model_names_the_closest_variant(tmp_path):
  _assert_one_line_error(_main(tmp_path, '--config.model.name=mvit_b16x4'), 'config.model.name', "'mvit_b16x4'",
                         "did you mean 'mvit_b_16x4'")


@pytest.mark.slow
def test_missing_config_file_names_the_closest_file(tmp_path):
  _assert_one_line_error(_main(tmp_path, config=os.path.join(REPO, 'experiments', 'dmeo.py')), 'dmeo.py',
                         "did you mean 'demo.py'")


@pytest.mark.slow
def test_missing_manifest_names_key_path_and_closest_file(tmp_path, data):
  result = _main(tmp_path / 'run', *_real_data(data), f'--config.data.train_manifest={data / "trian.csv"}')
  _assert_one_line_error(result, 'config.data.train_manifest', str(data / 'trian.csv'), "did you mean 'train.csv'")


@pytest.mark.slow
def test_missing_data_root_names_key_and_path(tmp_path, data):
  result = _main(tmp_path / 'run', *_real_data(data), f'--config.data.root={tmp_path / "videos"}')
  _assert_one_line_error(result, 'config.data.root', str(tmp_path / 'videos'))


@pytest.mark.slow
def test_unwritable_workdir_names_it(tmp_path):
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0o500)
  try:
    if os.access(locked, os.W_OK):
      pytest.skip('this user (root) can write a 0o500 folder')
    _assert_one_line_error(_main(locked / 'run'), '--workdir', str(locked / 'run'), 'Permission denied')
  finally:
    locked.chmod(0o700)


@pytest.mark.slow
def test_workdir_below_a_file_names_it(tmp_path):
  (tmp_path / 'file').write_text('')
  _assert_one_line_error(_main(tmp_path / 'file' / 'run'), '--workdir', str(tmp_path / 'file' / 'run'),
                         'Not a directory')


@pytest.mark.slow
def test_unexpected_argument_is_one_line(tmp_path):
  _assert_one_line_error(_main(tmp_path, 'extra'), 'Unexpected arguments', 'extra')


@pytest.mark.slow
def test_aot_unknown_key(tmp_path):
  result = _run('-m', 'mvit_jax.aot', '--config', DEMO, '--topology', 'v5e:2x2', '--config.optimzer.name=sgd')
  _assert_one_line_error(result, 'config.optimzer', "'optimizer'")


@pytest.mark.slow
def test_scan_missing_manifest_names_the_closest_file(data):
  result = _run('-m', 'mvit_jax.data.scan', '--manifest', str(data / 'trian.csv'))
  _assert_one_line_error(result, str(data / 'trian.csv'), "did you mean 'train.csv'")


@pytest.mark.slow
def test_model_stats_unknown_variant():
  _assert_one_line_error(_run('-m', 'mvit_jax.model_stats', '--variants', 'mvit_tiny,mvit_s16x4'), "'mvit_s16x4'",
                         "did you mean 'mvit_s_16x4'")


@pytest.mark.slow
def test_bench_model_arch_without_torchvision_reference():
  _assert_one_line_error(_run('scripts/bench_model.py', '--arch', 'mvitv2_l_40x3'), "'mvitv2_l_40x3'",
                         'no torchvision reference', 'mvitv2_s_16x4')


@pytest.mark.slow
def test_internal_error_keeps_its_traceback(tmp_path):
  script = ('import sys\n'
            'from mvit_jax import main\n'
            'from mvit_jax.system import cli\n'
            'from mvit_jax.train import trainer\n'
            'def fail(config, workdir):\n'
            '  raise RuntimeError("internal failure")\n'
            'trainer.train_and_evaluate = fail\n'
            f'sys.argv = ["mvit_jax.main", "--config", {DEMO!r}, "--workdir", {str(tmp_path)!r}]\n'
            'cli.run(main.main)\n')
  result = _run('-c', script)
  assert result.returncode == 1, result.stderr
  assert 'Traceback' in result.stderr and 'RuntimeError: internal failure' in result.stderr, result.stderr


def test_reporting_wrapper_passes_internal_errors_through_unchanged():
  error = RuntimeError('internal failure')

  def fail():
    raise error

  with pytest.raises(RuntimeError) as info:
    cli.reporting_input_errors(fail)()
  assert info.value is error


def test_reporting_wrapper_turns_input_errors_into_one_line_and_exit_2(capsys):

  def fail():
    raise InputError('config.x: bad')

  with pytest.raises(SystemExit) as info:
    cli.reporting_input_errors(fail)()
  assert info.value.code == 2
  assert capsys.readouterr().err.strip().endswith('error: config.x: bad')


@pytest.mark.parametrize('argv, keys', [
    (['prog', '--config', 'c.py', '--config.a.b=1', '--noconfig.c', '-config.d=2'], ['a.b', 'c', 'd']),
    (['prog', '--configs.a=1', '--other.a=2'], []),
])
def test_override_keys(argv, keys):
  assert cli.override_keys(argv, 'config') == keys


def test_config_file_argument_reads_both_spellings():
  assert cli.config_file_argument(['prog', '--config', 'a.py', '--x=1'], 'config') == 'a.py'
  assert cli.config_file_argument(['prog', '--other', 'v', '--config=b.py:arg'], 'config') == 'b.py:arg'
  assert cli.config_file_argument(['prog'], 'config') is None


def test_check_config_arguments_accepts_known_keys():
  cli.check_config_arguments(['prog', '--config', DEMO, '--config.batch_size=3', '--config.optimizer.name=sgd',
                              '--noconfig.half_precision'], 'config')


def test_check_config_arguments_reads_flagfiles(tmp_path):
  flagfile = tmp_path / 'flags.txt'
  flagfile.write_text(f'--config={DEMO}\n--config.batchsize=3\n')
  with pytest.raises(InputError, match=r"config\.batchsize \(did you mean 'batch_size'\?\)"):
    cli.check_config_arguments(['prog', f'--flagfile={flagfile}'], 'config')


def test_config_file_that_imports_flag_definitions_parses(tmp_path):
  """Loading a config file can import modules that define absl flags of their own; parsing goes on."""
  (tmp_path / 'defines_a_flag.py').write_text("from absl import flags\nflags.DEFINE_integer('from_config', 0, '')\n")
  config = tmp_path / 'config.py'
  config.write_text('import defines_a_flag\nimport ml_collections\n'
                    'def get_config():\n  return ml_collections.ConfigDict({"x": 1})\n')
  program = (f'import sys\nsys.path.insert(0, {str(tmp_path)!r})\n'
             'from ml_collections import config_flags\nfrom mvit_jax.system import cli\n'
             "config = config_flags.DEFINE_config_file('config')\n"
             f"sys.argv = ['prog', '--config={config}', '--config.x=2']\n"  # Overrides are read from sys.argv.
             'cli.parse_flags(sys.argv)\nprint(config.value.x)\n')
  result = _run('-c', program)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ['2']
