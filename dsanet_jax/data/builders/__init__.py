"""TFDS video builders and the lookup the rest of the project uses.

  builder = get_builder('order_of_events', data_dir)          # the config's data.name, data_dir
  builder = get_builder('kinetics400/mini200', data_dir)      # 'name/config[:version]'
  builder = get_builder('kinetics400', data_dir, short_side=128)  # a derived config
  builder = ensure_prepared('order_of_events', data_dir)      # builds it if missing

Importing this package registers the builders with TFDS, so `tfds.builder(name, data_dir=...)`
works too. The feature spec is in `base.py`.
"""

import contextlib
import dataclasses
import fcntl
import io
import re
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from dsanet_jax.common import paths
from dsanet_jax.data.builders import base, video
from dsanet_jax.data.builders.kinetics import Kinetics400
from dsanet_jax.data.builders.labelled_videos import LabelledVideos
from dsanet_jax.data.builders.order_of_events import OrderOfEvents
from dsanet_jax.data.builders.something_something import (
  SomethingSomethingV1,
  SomethingSomethingV2,
)

BUILDERS: dict[str, type[base.VideoDatasetBuilder]] = {
  cls.name: cls
  for cls in (
    OrderOfEvents,
    Kinetics400,
    SomethingSomethingV2,
    SomethingSomethingV1,
    LabelledVideos,
  )
}

# Builders that need no manual download (ensure_prepared may build them on the fly).
SELF_CONTAINED = ("order_of_events",)


def _split_name(name: str) -> tuple[str, str | None, str | None]:
  m = re.fullmatch(r"([\w.-]+)(?:/([\w.-]+))?(?::([\d.]+))?", name)
  if not m:
    raise ValueError(f"bad dataset name {name!r}: expected 'name', 'name/config' or 'name:1.0.0'")
  return m.group(1), m.group(2), m.group(3)


def _derived_name(config_name: str, overrides: dict[str, Any]) -> str:
  parts = [config_name] + [f"{k}{v}" for k, v in sorted(overrides.items())]
  return re.sub(r"[^\w.-]", "", "_".join(parts).replace(".", "p"))


def get_builder(
  name: str,
  data_dir: str | None = None,
  *,
  config: tfds.core.BuilderConfig | None = None,
  manual_dir: str | None = None,
  num_workers: int | None = None,
  decode_timeout: float | None = video.DEFAULT_DECODE_TIMEOUT,
  **config_overrides: Any,
) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `name` ('dataset[/config][:version]') under `data_dir`.

  `config` (a BuilderConfig object, e.g. a `LabelledVideosConfig`) replaces the named config.
  `manual_dir` lets builders whose class list is in the manual folder (SSv1/v2, Mini-Kinetics,
  labelled_videos) read it at construction.

  `config_overrides` (e.g. short_side=128, target_fps=10) derive a new config from the named one;
  its name records the overrides so different variants never share a folder. A config name that
  the builder class does not define (e.g. a `labelled_videos` set prepared by `prepare.py`) is
  read from `data_dir` with `tfds.builder_from_directory`.
  """
  ds, config_name, version = _split_name(name)
  if ds not in BUILDERS:
    raise ValueError(f"unknown dataset {ds!r}; known: {sorted(BUILDERS)}")
  cls = BUILDERS[ds]
  kwargs = dict(
    data_dir=data_dir, num_workers=num_workers, manual_dir=manual_dir, decode_timeout=decode_timeout
  )
  if version:
    kwargs["version"] = version
  if config is not None:
    if config_overrides:
      config = dataclasses.replace(config, **config_overrides)
    return cls(config=config, **kwargs)
  configs = {c.name: c for c in cls.BUILDER_CONFIGS}
  if config_name is None:
    config_name = cls.DEFAULT_CONFIG_NAME or (cls.BUILDER_CONFIGS[0].name if configs else None)
  if config_name not in configs:
    return _from_directory(ds, config_name, version, data_dir)
  config = configs[config_name]
  if config_overrides:
    unknown = set(config_overrides) - {f.name for f in dataclasses.fields(config)}
    if unknown:
      raise ValueError(f"{ds}: unknown config fields {sorted(unknown)} in overrides")
    config = dataclasses.replace(
      config,
      name=_derived_name(config_name, config_overrides),
      description=f"{config.description} Overrides: {config_overrides}.",
      **config_overrides,
    )
  return cls(config=config, **kwargs)


def _from_directory(
  ds: str, config_name: str | None, version: str | None, data_dir: str | None
) -> tfds.core.DatasetBuilder:
  root = paths.resolve(data_dir or tfds.core.constants.DATA_DIR) / ds
  root = root / config_name if config_name else root
  versions = []
  if root.is_dir():
    versions = [p.name for p in root.iterdir() if re.fullmatch(r"\d+\.\d+\.\d+", p.name)]
  if version:
    versions = [v for v in versions if v == version]
  if not versions:
    raise ValueError(
      f"{ds}/{config_name}: not a predefined config of {ds!r} and no prepared dataset in {root}; "
      "prepare it first (python -m dsanet_jax.data.prepare --help)"
    )
  latest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
  return tfds.builder_from_directory(str(root / latest))


@contextlib.contextmanager
def _build_lock(root: epath.Path, name: str) -> Iterator[None]:
  """Processes sharing a local (or NFS) `root` build one at a time (an exclusive file lock).
  Object storage has no locks: there nothing is held, so prepare a dataset once before a
  multi-host run (`python -m dsanet_jax.data.prepare`)."""
  if paths.is_url(root):
    yield
    return
  root.mkdir(parents=True, exist_ok=True)
  with open(root / f".{name}.lock", "w") as lock:  # a local file
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_prepared(
  name: str,
  data_dir: str | None = None,
  *,
  manual_dir: str | None = None,
  num_workers: int | None = None,
  config: tfds.core.BuilderConfig | None = None,
  decode_timeout: float | None = video.DEFAULT_DECODE_TIMEOUT,
  beam_options: Any = None,
  overwrite: bool = False,
  **config_overrides: Any,
) -> tfds.core.DatasetBuilder:
  """`get_builder(...)`, built first if it is not prepared yet (locally under a file lock, so
  parallel processes sharing `data_dir` build it once). Datasets from manual downloads need
  `manual_dir` (or the TFDS default manual folder). `data_dir` may be a URL (`gs://...`).

  `beam_options` (an `apache_beam` PipelineOptions) builds through Beam (docs/data.md);
  `overwrite` rebuilds a prepared dataset (e.g. one that `stale_reasons` reports as stale).
  """
  kw = dict(
    config=config, manual_dir=manual_dir, num_workers=num_workers, decode_timeout=decode_timeout
  )
  builder = get_builder(name, data_dir, **kw, **config_overrides)
  if _is_prepared(builder) and not overwrite:
    return builder
  root = paths.resolve(data_dir or tfds.core.constants.DATA_DIR)
  mode = tfds.download.GenerateMode
  with _build_lock(root, _split_name(name)[0]):
    builder = get_builder(name, data_dir, **kw, **config_overrides)
    if overwrite or not _is_prepared(builder):
      logging.info("building %s in %s (first use; once per data_dir)", name, root)
      printed = io.StringIO()
      with contextlib.redirect_stdout(printed):  # TFDS prints its two notices (termcolor)
        builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir,
            try_download_gcs=False,
            beam_options=beam_options,
            download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS,
          )
        )
      for line in printed.getvalue().splitlines():  # to the log file, not the console
        logging.info("%s", line, extra={"file_only": True})
      builder = get_builder(name, data_dir, **kw, **config_overrides)
  return builder


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  return bool(getattr(builder, "is_prepared", lambda: True)())


__all__ = ["BUILDERS", "SELF_CONTAINED", "base", "ensure_prepared", "get_builder"]
