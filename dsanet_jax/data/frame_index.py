"""Where each JPEG frame lies in a TFDS TFRecord shard, so that a clip reads only its frames.

A video is stored as one `tf.train.Example` (the builders' `video` = JPEG frames), and a training
clip uses 32 of its ~300 frames: reading the whole record reads ~10x the bytes it uses
(docs/pipeline.md, "Bytes read per used frame"). The index of a shard holds, for each of its
records in order, the byte offset and length of every frame's JPEG inside the shard file, the
label and the video id; `read_frames` then reads only the chosen frames as byte ranges
(`tf.io.gfile`, so `gs://` works). The stored data is unchanged.

The index of `SHARD` is `SHARD.frames.npz` beside it, built by one pass over the shard's records
(TFRecord framing, then the proto wire format of the Example down to the `video` bytes) the first
time the shard is read (`ensure`), and rebuilt when the shard's size no longer matches it.

Arrays of an index: `offset` int64 [N frames], `length` int32 [N], `row_splits` int64 [R + 1]
(record r's frames are [row_splits[r], row_splits[r + 1])), `label` int64 [R], `video_id` bytes
[R], `shard_bytes` int64 (the shard's size when indexed).
"""

import io
import os
import struct
import threading
import uuid
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

SUFFIX = ".frames.npz"
_HEADER = 12  # TFRecord: uint64 length, uint32 masked CRC of the length; then data, uint32 CRC


def index_path(shard: str) -> str:
  return shard + SUFFIX


def _varint(buf: bytes, i: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = buf[i]
    i += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if byte < 0x80:
      return value, i


def _fields(buf: bytes, lo: int, hi: int) -> Iterator[tuple[int, int, int, int]]:
  """(field number, wire type, start, end) of the fields of the message buf[lo:hi]; for a varint
  field start is its value and end -1."""
  i = lo
  while i < hi:
    key, i = _varint(buf, i)
    number, wire = key >> 3, key & 7
    if wire == 2:  # length-delimited
      n, i = _varint(buf, i)
      yield number, wire, i, i + n
      i += n
    elif wire == 0:
      value, i = _varint(buf, i)
      yield number, wire, value, -1
    elif wire == 1:
      yield number, wire, i, i + 8
      i += 8
    elif wire == 5:
      yield number, wire, i, i + 4
      i += 4
    else:
      raise ValueError(f"unsupported protobuf wire type {wire} at byte {i}")


def _features(rec: bytes) -> dict[bytes, tuple[int, int]]:
  """Feature name -> (start, end) of its `Feature` message in the serialized Example `rec`."""
  out = {}
  for number, _, a, z in _fields(rec, 0, len(rec)):
    if number != 1:  # Example.features
      continue
    for number2, _, a2, z2 in _fields(rec, a, z):  # Features.feature: map entries
      if number2 != 1:
        continue
      key, value = None, None
      for number3, _, a3, z3 in _fields(rec, a2, z2):
        if number3 == 1:
          key = rec[a3:z3]
        elif number3 == 2:
          value = (a3, z3)
      if key is not None and value is not None:
        out[key] = value
  return out


def _bytes_values(rec: bytes, feature: tuple[int, int]) -> list[tuple[int, int]]:
  """(start, end) of each value of a `Feature` holding a bytes_list."""
  spans = []
  for number, _, a, z in _fields(rec, *feature):
    if number == 1:  # Feature.bytes_list
      spans += [(a2, z2) for number2, _, a2, z2 in _fields(rec, a, z) if number2 == 1]
  return spans


def _int64_value(rec: bytes, feature: tuple[int, int]) -> int:
  """The single value of a `Feature` holding an int64_list."""
  for number, _, a, z in _fields(rec, *feature):
    if number == 3:  # Feature.int64_list
      for number2, wire, a2, _ in _fields(rec, a, z):
        if number2 == 1:
          value = _varint(rec, a2)[0] if wire == 2 else a2  # packed or not
          return value - (1 << 64) if value >= 1 << 63 else value
  raise ValueError("int64 feature without a value")


def scan(shard: str) -> dict[str, np.ndarray]:
  """The index arrays of a TFRecord shard of tf.train.Example with `video` (bytes list), `label`
  (int64) and `video_id` (bytes): one pass over its records."""
  offsets, lengths, splits, labels, ids = [], [], [0], [], []
  pos = 0
  with tf.io.gfile.GFile(shard, "rb") as f:
    while header := f.read(_HEADER):
      if len(header) != _HEADER:
        raise ValueError(f"{shard}: truncated TFRecord header at byte {pos}")
      (n,) = struct.unpack("<Q", header[:8])
      rec = f.read(n)
      if len(rec) != n or len(f.read(4)) != 4:
        raise ValueError(f"{shard}: truncated TFRecord record at byte {pos}")
      feats = _features(rec)
      missing = {b"video", b"label", b"video_id"} - set(feats)
      if missing:
        raise ValueError(f"{shard}: record at byte {pos} lacks features {sorted(missing)}")
      start = pos + _HEADER
      for a, z in _bytes_values(rec, feats[b"video"]):
        offsets.append(start + a)
        lengths.append(z - a)
      splits.append(len(offsets))
      labels.append(_int64_value(rec, feats[b"label"]))
      ((a, z),) = _bytes_values(rec, feats[b"video_id"])
      ids.append(rec[a:z])
      pos = start + n + 4
  return {
    "offset": np.asarray(offsets, np.int64),
    "length": np.asarray(lengths, np.int32),
    "row_splits": np.asarray(splits, np.int64),
    "label": np.asarray(labels, np.int64),
    "video_id": np.asarray(ids, dtype=object).astype(bytes),
    "shard_bytes": np.asarray(pos, np.int64),
  }


def _load(shard: str) -> dict[str, np.ndarray] | None:
  """The stored index of `shard` if it exists and matches the shard's size, else None."""
  path = index_path(shard)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as z:
    index = {k: z[k] for k in z.files}
  if int(index["shard_bytes"]) != tf.io.gfile.stat(shard).length:
    logging.warning("%s is stale (the shard changed size): rebuilding it", path)
    return None
  return index


@tf.autograph.experimental.do_not_convert  # plain Python, also when called while tracing
def ensure(shard: str) -> None:
  """Builds and stores the index of `shard` unless a matching one is stored. The file is written
  under a unique temporary name, then renamed over the final one (processes indexing the same
  shard at once write the same bytes)."""
  if _load(shard) is not None:
    return
  index = scan(shard)
  buf = io.BytesIO()
  np.savez(buf, **index)
  tmp = f"{index_path(shard)}.tmp-{uuid.uuid4().hex}"
  try:
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(buf.getvalue())
  except tf.errors.PermissionDeniedError as e:
    raise PermissionError(
      f"cannot write the frame index {index_path(shard)}: the dataset directory must be "
      "writable the first time a shard is read"
    ) from e
  tf.io.gfile.rename(tmp, index_path(shard), overwrite=True)
  logging.info("indexed the frames of %s (%d videos)", shard, len(index["label"]))


def load(shard: str) -> dict[str, np.ndarray]:
  """The stored index of `shard` (`ensure` first); fails if it is missing or stale."""
  index = _load(shard)
  if index is None:
    raise FileNotFoundError(f"no up-to-date frame index {index_path(shard)} (frame_index.ensure)")
  return index


_cache = threading.local()


def read_frames(shard: bytes | np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """The byte ranges [offset, offset + length) of the shard file: object array of bytes [N]
  (for `tf.numpy_function`; each tf.data thread keeps the shard it read last open)."""
  path = os.fsdecode(np.asarray(shard).item())  # bytes in tf.data, a 0-d array when eager
  last = getattr(_cache, "file", None)
  if last is None or last[0] != path:
    if last is not None:
      last[1].close()
    _cache.file = last = (path, tf.io.gfile.GFile(path, "rb"))
  f = last[1]
  out = np.empty(len(offsets), dtype=object)
  for i, (offset, length) in enumerate(zip(offsets.tolist(), lengths.tolist(), strict=True)):
    f.seek(offset)
    out[i] = f.read(length)
  return out
