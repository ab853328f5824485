"""Runs a command-line entry point so that bad input ends in one line on stderr and exit status 2.

`run(main)` replaces `app.run(main)`: a bad flag, a config file that does not exist, a `--config.KEY=VALUE` override
of a key the config does not have (with the closest key), a value of the wrong type, an `app.UsageError` or an
`errors.InputError` raised by `main` print `PROG: error: MESSAGE` and exit 2. Any other exception is an internal
error and keeps its traceback.
"""
from collections.abc import Callable, Sequence
import os
import re
import sys

from absl import app
from absl import flags
from ml_collections.config_flags import config_flags

from mvit_jax.system.errors import did_you_mean
from mvit_jax.system.errors import did_you_mean_path
from mvit_jax.system.errors import InputError
from mvit_jax.system import storage

USAGE_EXIT_STATUS = 2


def config_file_argument(argv: Sequence[str], flag_name: str) -> str | None:
  """The value of --flag_name in argv (None when absent), read the way absl reads it ('--f x' or '--f=x')."""
  values = flags.FlagValues()
  flags.DEFINE_string(flag_name, None, '', flag_values=values)
  values(list(argv), known_only=True)
  return values[flag_name].value


def override_keys(argv: Sequence[str], flag_name: str) -> list[str]:
  """Dotted keys of the `--flag_name.KEY=VALUE` (and `--[no]flag_name.KEY`) overrides in argv, in order."""
  pattern = re.compile(rf'^--?(?:no)?{re.escape(flag_name)}\.([^=]+)')
  return [match.group(1) for match in map(pattern.match, argv) if match]


def check_override(config, key: str, flag_name: str) -> None:
  """InputError when `key` (e.g. 'optimizer.base_lr') does not name a field of `config`."""
  holder = config
  walked = flag_name
  for part in key.split('.'):
    if '[' in part:  # An index into a sequence field: ml_collections checks it.
      return
    if not hasattr(holder, 'keys'):
      raise InputError(f'--{flag_name}.{key}: {walked} is a value, not a group of keys')
    if part not in holder:
      raise InputError(f'--{flag_name}.{key}: unknown config key {walked}.{part}'
                       f'{did_you_mean(part, holder.keys())}')
    holder = holder[part]
    walked = f'{walked}.{part}'


def check_config_arguments(argv: Sequence[str], flag_name: str) -> None:
  """InputError for a missing config file or an override of an unknown key, before ml_collections parses them."""
  argv = flags.FLAGS.read_flags_from_files(list(argv), force_gnu=False)  # --flagfile, as ml_collections reads it.
  argument = config_file_argument(argv, flag_name)
  if argument is None:
    return
  path = argument.split(':', 1)[0]  # 'file.py:arg' passes arg to get_config.
  if not os.path.isfile(path):
    raise InputError(f'--{flag_name}: no such file {path!r}{did_you_mean_path(path)}')
  keys = override_keys(argv, flag_name)
  if keys:
    config = config_flags.ConfigFileFlagParser(flag_name, lock_config=False).parse(argument)
    for key in keys:
      check_override(config, key, flag_name)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with bad input raised as InputError (absl's own one-line messages kept)."""
  try:
    # A list, since loading a config file can import modules that define flags of their own.
    for name in list(flags.FLAGS):
      if config_flags.is_config_flag(flags.FLAGS[name]):
        check_config_arguments(argv, name)
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    message = str(e)
    if '\n' in message:  # A config file that raised while loading: its traceback is in the message.
      raise
    raise InputError(message) from None


def program_name() -> str:
  """'mvit_jax.main' under `python -m mvit_jax.main`, else the script's file name."""
  spec = getattr(sys.modules['__main__'], '__spec__', None)
  return spec.name if spec is not None else os.path.basename(sys.argv[0])


def exit_with_usage_error(message: str) -> None:
  print(f'{program_name()}: error: {message}', file=sys.stderr)
  sys.exit(USAGE_EXIT_STATUS)


def reporting_input_errors(function: Callable) -> Callable:
  """`function` with InputError and app.UsageError turned into one line on stderr and exit status 2, and
  storage.StoreError (a bucket that stays down) into one line and exit status 1."""

  def wrapped(*args, **kwargs):
    try:
      return function(*args, **kwargs)
    except (InputError, app.UsageError) as e:
      exit_with_usage_error(str(e))
    except storage.StoreError as e:
      print(f'{program_name()}: error: {e}', file=sys.stderr)
      sys.exit(1)

  return wrapped


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) where bad input ends in one line on stderr and exit status 2 (see the module docstring)."""
  app.run(reporting_input_errors(main), flags_parser=reporting_input_errors(parse_flags))
