"""User-given locations: a URL (`gs://bucket/run`) or a local path, one type for both.

Every path a user gives (the workdir, data_dir, init_from, export_dir, a checkpoint, the runs given
to the tools) goes through `resolve` and is then read and written with `etils.epath` (or handed to
Orbax / TensorStore / TFDS as `str(...)`), never with `os.path`, `open` or `os.makedirs`, so that a
`gs://` location stays a URL instead of becoming a local folder named `gs:`.

Which library does the I/O: epath's `gs://` goes through gcsfs (fsspec): this module sets
`EPATH_USE_TF=false` (unless set), else epath would pick TensorFlow's file system whenever
TensorFlow is installed, and that one has no endpoint setting (gcsfs honours
`STORAGE_EMULATOR_HOST`, which the tests use). Orbax/TensorStore use their own GCS client.
TensorBoard event files of a URL workdir are written locally by clu and uploaded through epath
(`train.writers.StagedSummaryWriter`). Only TFDS's records (tf.data) go through TensorFlow's file
system.
"""

import os

os.environ.setdefault("EPATH_USE_TF", "false")  # before epath decides (it caches the choice)

from etils import epath

SCHEMES = ("gs://", "s3://", "az://", "hf://")  # etils.epath's


def is_url(path: str | os.PathLike) -> bool:
  """Whether `path` names object storage (`gs://...`, `s3://...`) rather than a local file."""
  return "://" in os.fspath(path)


def resolve(path: str | os.PathLike) -> epath.Path:
  """A URL as given; a local path with `~` expanded and made absolute (Orbax and TensorStore need
  absolute local paths). A URL scheme that etils.epath has no path class for is a ValueError
  (epath knows gs://, s3://, az://, hf://, and any scheme registered with
  `epath.register_path_cls`)."""
  s = os.fspath(path)
  if not is_url(s):
    return epath.Path(s).expanduser().absolute()
  try:
    return epath.Path(s)
  except KeyError:  # epath's lookup of the scheme's path class
    raise ValueError(f"{s}: unsupported URL scheme (supported: {', '.join(SCHEMES)})") from None


def write_whole(path: epath.Path, data: str | bytes) -> None:
  """Writes `path` so that no reader sees it half-written: on object storage an upload appears
  whole (or not at all); a local file is written beside and renamed."""
  if is_url(path):
    target = path
  else:
    target = path.parent / (path.name + ".tmp")
  if isinstance(data, str):
    target.write_text(data)
  else:
    target.write_bytes(data)
  if target != path:
    target.replace(path)
