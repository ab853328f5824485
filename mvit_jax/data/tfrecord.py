"""TFRecord files read by record offset, without TensorFlow.

A TFRecord file is records back to back, each: uint64 data length (little endian), uint32 masked crc32c of those
8 bytes, the data, uint32 masked crc32c of the data. The format has no index, so random access needs one
sequential pass (`scan`) that finds each record's offset and length; `read` then fetches one record with one
ranged read and checks it.

Written by hand: TensorFlow's readers are sequential (and importing TensorFlow costs ~4 s and hundreds of MB per
loader worker); the `tfrecord` package's index tool reads local files only, record by record, and checks no crc.
crc32c comes from google_crc32c (a dependency of gcsfs); its pure-Python fallback, used where no compiled wheel
exists, runs at ~8 MB/s (a hundredth of the parse), so data crcs are then left unchecked (the length crcs
still are).
"""
from collections.abc import Iterator
import dataclasses
import struct

import google_crc32c

from mvit_jax.system import storage

HEADER_BYTES = 12  # uint64 length + uint32 masked crc of it.
FOOTER_BYTES = 4   # uint32 masked crc of the data.
CHECK_DATA_CRC = google_crc32c.implementation == 'c'


class RecordError(Exception):
  """A record that cannot be used (bad crc, truncated); the message says why."""


class FramingError(Exception):
  """A file whose framing breaks at `offset`: nothing from there on can be found."""

  def __init__(self, offset: int, reason: str):
    super().__init__(f'byte {offset}: {reason}')
    self.offset = offset


@dataclasses.dataclass(frozen=True)
class Record:
  """One record found by `scan`: where it starts, its data length, and its data (None for a bad one: `read`
  says why)."""
  offset: int
  length: int
  data: bytes | None


def masked_crc(data: bytes) -> int:
  """TFRecord's masked crc32c of `data`."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _header_length(header: bytes, offset: int) -> int:
  """The data length a 12-byte header gives; raises FramingError when its crc is wrong."""
  length, crc = struct.unpack('<QI', header)
  if masked_crc(header[:8]) != crc:
    raise FramingError(offset, 'record header crc mismatch (not a TFRecord file, or corrupt)')
  return length


def _data_error(data: bytes, footer: bytes) -> str:
  """'' for good data, else why not."""
  if CHECK_DATA_CRC and masked_crc(data) != struct.unpack('<I', footer)[0]:
    return 'record data crc mismatch (corrupt)'
  return ''


class _BlockReader:
  """Sequential reads of a file (local or URL) through storage.read_range, `block_bytes` or more at a time: one
  request per block on a bucket, and one block (plus the record being read) in memory."""

  def __init__(self, path: str, block_bytes: int):
    self.path, self.block_bytes = path, block_bytes
    self.buffer, self.start, self.pos = b'', 0, 0  # buffer holds the file's bytes [start, start + len(buffer)).
    self.at_end = False  # A short read has reached the end: no further request.

  def read(self, n: int) -> bytes:
    """The next `n` bytes (fewer at the end of the file)."""
    end, have = self.pos + n, self.start + len(self.buffer)
    if end > have and not self.at_end:
      size = max(self.block_bytes, end - have)
      more = storage.read_range(self.path, have, size)
      self.at_end = len(more) < size
      self.buffer, self.start = self.buffer[self.pos - self.start:] + more, self.pos
    data = self.buffer[self.pos - self.start:end - self.start]
    self.pos += len(data)
    return data


def scan(path: str, block_bytes: int = storage.READ_BLOCK_BYTES) -> Iterator[Record]:
  """Every record of the TFRecord file `path` (local or URL), in order, with its data; the file is read
  sequentially in blocks of `block_bytes`.

  A record whose data is bad (crc) or cut short by the end of the file comes without data (a cut one last).
  Raises FramingError where a header is cut short or corrupt (the records before it have been yielded).
  """
  file, offset = _BlockReader(path, block_bytes), 0
  while header := file.read(HEADER_BYTES):
    if len(header) < HEADER_BYTES:
      raise FramingError(offset, f'file ends inside a record header ({len(header)} of {HEADER_BYTES} bytes)')
    length = _header_length(header, offset)
    data, footer = file.read(length), file.read(FOOTER_BYTES)
    if len(data) < length or len(footer) < FOOTER_BYTES:
      yield Record(offset, length, None)
      return
    yield Record(offset, length, None if _data_error(data, footer) else data)
    offset += HEADER_BYTES + length + FOOTER_BYTES


def read(path: str, offset: int, length: int) -> bytes:
  """The data of the record at `offset` with `length` data bytes, checked; one ranged read. Raises RecordError
  (bad or truncated record) or the store's OSError."""
  size = HEADER_BYTES + length + FOOTER_BYTES
  raw = storage.read_range(path, offset, size)
  if len(raw) < size:
    raise RecordError(f'truncated: the file ends {size - len(raw)} bytes before the end of the record')
  try:
    if _header_length(raw[:HEADER_BYTES], offset) != length:
      raise RecordError('record length differs from the index (file rewritten?)')
  except FramingError as e:
    raise RecordError(str(e)) from None
  data = raw[HEADER_BYTES:HEADER_BYTES + length]
  if error := _data_error(data, raw[-FOOTER_BYTES:]):
    raise RecordError(error)
  return data
