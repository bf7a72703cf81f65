"""`ram://` for etils.epath: the tests' stand-in for a URL only TensorFlow's file system serves.

TFDS reaches a dataset through etils.epath (metadata, the build) and tf.data (the records).
epath knows gs://, s3://, az:// and hf:// only; registering `ram://` (TensorFlow's in-memory file
system) here, with epath's TensorFlow backend (tf.io.gfile) behind it, lets a test hand the
project's data code a URL that every read and write must reach through TensorFlow, so that no
code path may turn it into a local file name (a local folder named `ram:` shows that one did).
Test-only: the library accepts any scheme epath has a path class for (`paths.resolve`).
"""

import os

from etils import epath
from etils.epath import backend, gpath

SCHEME = "ram://"


@epath.register_path_cls(SCHEME)
class RamPath(gpath.PosixGPath):
  """`ram://...` kept as a URL (epath stores `gs://b` as `/gs/b` the same way), via tf.io.gfile."""

  def __new__(cls, *parts: epath.PathLike) -> "RamPath":
    full = "/".join(os.fspath(p) for p in parts)
    if full.startswith(SCHEME):
      full = "/ram/" + full[len(SCHEME) :]
    return super().__new__(cls, full)

  @property
  def _uri_scheme(self) -> str | None:
    return "ram" if len(self.parts) >= 2 and self.parts[:2] == ("/", "ram") else None

  @property
  def _backend(self) -> backend.Backend:
    return backend.tf_backend
