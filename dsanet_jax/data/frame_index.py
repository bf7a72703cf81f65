"""Where each JPEG frame lies in a TFDS TFRecord shard, so that a clip reads only its frames.

A video is stored as one `tf.train.Example` (the builders' `video` = JPEG frames), and a training
clip uses 32 of its ~300 frames: reading the whole record reads ~10x the bytes it uses
(docs/pipeline.md, "Bytes read per used frame"). The index of a shard holds, for each of its
records in order, the byte offset and length of every frame's JPEG inside the shard file, the
label and the video id; `read_frames` then reads only the chosen frames as byte ranges
(`tf.io.gfile`, so `gs://` works). The stored data is unchanged.

The index of `SHARD` is `SHARD.frames.npz` beside it, built by one pass over the shard's records
(TFRecord framing, then the proto wire format of the Example down to the `video` bytes) by `prepare`
after a build, or the first time the shard is read (`ensure`). Many hosts may read a dataset at once
(a pod, `gs://`): each writes the whole index under a unique temporary name and renames it over the
final one (a local rename is atomic, and a `gs://` object appears only whole), and all write the
same bytes, so a reader sees no index or a whole one. An index is used only if it parses, its arrays
agree with each other, and it matches the shard: the same size and the same SHA-256 of the shard's
first and last 64 KiB (a rewritten shard changes its first or last records); otherwise `ensure`
rebuilds it and `load` fails naming the file. Where the shards cannot be written beside (a read-only
bucket or folder), each process keeps the indexes it builds in memory, with one warning saying how
to store them (`prepare`, with write access).

Arrays of an index: `offset` int64 [N frames], `length` int32 [N], `row_splits` int64 [R + 1]
(record r's frames are [row_splits[r], row_splits[r + 1])), `label` int64 [R], `video_id` bytes
[R], `shard_bytes` int64 (the shard's size when indexed), `shard_digest` uint8 [32] (`fingerprint`).
"""

import concurrent.futures
import hashlib
import io
import os
import struct
import threading
import uuid
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

SUFFIX = ".frames.npz"
_HEADER = 12  # TFRecord: uint64 length, uint32 masked CRC of the length; then data, uint32 CRC
ENDS = 64 * 1024  # bytes at each end of a shard that its fingerprint hashes
_KEYS = ("offset", "length", "row_splits", "label", "video_id", "shard_bytes", "shard_digest")


def index_path(shard: str) -> str:
  return shard + SUFFIX


def fingerprint(shard: str) -> tuple[int, bytes]:
  """(size in bytes, SHA-256 of its first and last 64 KiB) of a shard file: two ranged reads."""
  size = tf.io.gfile.stat(shard).length
  h = hashlib.sha256()
  with tf.io.gfile.GFile(shard, "rb") as f:
    h.update(f.read(ENDS))
    if size > ENDS:
      f.seek(max(ENDS, size - ENDS))
      h.update(f.read())
  return size, h.digest()


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
  size, digest = fingerprint(shard)
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
    # the shard changed while it was read: a digest that matches nothing (stale at once)
    "shard_digest": np.frombuffer(digest if pos == size else b"", np.uint8),
  }


def _problem(shard: str) -> tuple[dict[str, np.ndarray] | None, str]:
  """(the stored index of `shard`, '') if it is whole and matches the shard, else (None, why)."""
  path = index_path(shard)
  if not tf.io.gfile.exists(path):
    return None, "missing"
  try:
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as z:
      index = {k: z[k] for k in _KEYS}
  except (zipfile.BadZipFile, EOFError, KeyError, ValueError) as e:
    return None, f"unreadable ({type(e).__name__}: {e})"
  splits, n = index["row_splits"], index["offset"].shape
  if not (
    index["length"].shape == n
    and splits.ndim == 1
    and splits.size == index["label"].size + 1 == index["video_id"].size + 1
    and splits[0] == 0
    and splits[-1] == n[0]
  ):
    return None, "inconsistent (its arrays disagree)"
  size, digest = fingerprint(shard)
  if int(index["shard_bytes"]) != size or index["shard_digest"].tobytes() != digest:
    return None, "stale (the shard changed since it was indexed)"
  return index, ""


BUILT, IN_MEMORY = "built", "in memory"
_memory: dict[str, dict[str, np.ndarray]] = {}  # shard -> index built where it could not be stored


@tf.autograph.experimental.do_not_convert  # plain Python, also when called while tracing
def ensure(shard: str) -> str:
  """Builds and stores the index of `shard` unless this process has a matching one: '' (it had),
  BUILT, or IN_MEMORY (built, but the shard's folder is read-only: kept for this process). The
  file is written under a unique temporary name, then renamed over the final one (processes
  indexing the same shard at once write the same bytes)."""
  if shard in _memory:
    return ""
  index, why = _problem(shard)
  if index is not None:
    return ""
  if why != "missing":
    logging.warning("%s is %s: rebuilding it", index_path(shard), why)
  index = scan(shard)
  buf = io.BytesIO()
  np.savez(buf, **index)
  tmp = f"{index_path(shard)}.tmp-{uuid.uuid4().hex}"
  try:
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(buf.getvalue())
    tf.io.gfile.rename(tmp, index_path(shard), overwrite=True)
  except tf.errors.PermissionDeniedError as e:
    logging.log(logging.DEBUG, "cannot write %s (%s): kept in memory", index_path(shard), e)
    _memory[shard] = index
    return IN_MEMORY
  finally:
    if tf.io.gfile.exists(tmp):  # a failed write or rename leaves no temporary file
      tf.io.gfile.remove(tmp)
  logging.log(logging.DEBUG, "indexed the frames of %s (%d videos)", shard, len(index["label"]))
  return BUILT


def load(shard: str) -> dict[str, np.ndarray]:
  """The index of `shard` (`ensure` first): stored, or kept in memory where the shard's folder is
  read-only; fails if it is missing, partial or stale."""
  if shard in _memory:
    return _memory[shard]
  index, why = _problem(shard)
  if index is None:
    raise FileNotFoundError(f"frame index {index_path(shard)} is {why} (frame_index.ensure)")
  return index


@tf.autograph.experimental.do_not_convert  # plain Python, also when called while tracing
def ensure_all(shards: Sequence[str], threads: int = 8) -> dict[str, int]:
  """`ensure` of each shard, `threads` at a time (a host's first read of a dataset, or
  `prepare`): how many were BUILT and IN_MEMORY. One line when it indexed any; a warning when a
  read-only folder kept it from storing them."""
  with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(shards)))) as pool:
    results = list(pool.map(ensure, shards))
  counts = {BUILT: results.count(BUILT), IN_MEMORY: results.count(IN_MEMORY)}
  where = shards[0].rsplit("/", 1)[0] if shards else ""
  if counts[BUILT]:
    logging.info(
      "indexed the frames of %d of %d shards in %s (first read)", counts[BUILT], len(shards), where
    )
  if counts[IN_MEMORY]:
    logging.warning(
      "%s is read-only: indexed the frames of %d of %d shards in memory (this process only; "
      "`python -m dsanet_jax.data.prepare` with write access stores the indexes beside them)",
      where,
      counts[IN_MEMORY],
      len(shards),
    )
  return counts


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
