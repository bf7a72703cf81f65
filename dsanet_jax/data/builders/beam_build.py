"""One split of a video dataset as an Apache Beam PTransform (TFDS's Beam support).

`VideoDatasetBuilder._split_generators` returns a `GenerateSplit` per split when the
DownloadConfig carries Beam options; TFDS runs the pipeline and writes the examples. The items
are spread over the workers (`Reshuffle`); each worker decodes with its own one-process
`decode.DecodePool`, so the per-video time-out and the skip reasons are those of the plain build.
The items travel as files of `CHUNK` items in a work folder beside the dataset (not inside the
pipeline graph, which runners such as Dataflow limit in size); the builder deletes it after.
Skipped videos leave the encode step as a second output, are gathered into one list on one
worker, sorted by their position in the annotation (as the plain build lists them) and written
once to `skipped_<split>.json`; the builder then puts the counts into the metadata.
"""

import os
import pickle
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from etils import epath

from dsanet_jax.data import decode
from dsanet_jax.data.builders import video

SKIPPED_TAG = "skipped"
CHUNK = 256  # items per work file


def write_chunks(items: list[video.VideoItem], work_dir: str) -> list[str]:
  """Writes (index, item) pairs in files of CHUNK items to `work_dir`; returns their paths."""
  root = epath.Path(work_dir)
  root.mkdir(parents=True, exist_ok=True)
  pairs = list(enumerate(items))
  paths = []
  for k in range(0, len(pairs), CHUNK):
    path = root / f"items_{k // CHUNK:06d}.pkl"
    path.write_bytes(pickle.dumps(pairs[k : k + CHUNK]))
    paths.append(os.fspath(path))
  return paths


def read_chunk(path: str) -> list[tuple[int, video.VideoItem]]:
  """The (index, item) pairs of one work file (written by `write_chunks` of this build)."""
  return pickle.loads(epath.Path(path).read_bytes())


class EncodeVideos(beam.DoFn):
  """(index, VideoItem) -> (video_id, example), or (index, skip record) on `SKIPPED_TAG`."""

  def __init__(self, config: video.VideoBuilderConfig, decode_timeout: float | None) -> None:
    super().__init__()
    self.config = config
    self.decode_timeout = decode_timeout
    self.pool: decode.DecodePool | None = None

  def setup(self) -> None:
    self.pool = decode.DecodePool(1, self.decode_timeout)

  def teardown(self) -> None:
    if self.pool is not None:
      self.pool.close()
      self.pool = None

  def process(self, element: tuple[int, video.VideoItem]) -> Iterator[Any]:
    index, item = element
    result = video.encode_item(item, self.config, self.pool)
    if isinstance(result, decode.DecodeError):
      record = video.skip_record(item, result.reason, result.detail)
      yield beam.pvalue.TaggedOutput(SKIPPED_TAG, (index, record))
      return
    yield item.video_id, video.make_example(item, result)


def _write_skipped(found: list[tuple[int, dict[str, str]]], before: list, path: str) -> None:
  video.write_skipped(path, before + [record for _, record in sorted(found, key=lambda x: x[0])])


class GenerateSplit(beam.PTransform):
  """The examples of one split; writes its skip list (module docstring) as a side branch."""

  def __init__(
    self,
    items: list[video.VideoItem],
    skipped_before: list[dict[str, str]],
    skipped_path: str,
    work_dir: str,
    *,
    config: video.VideoBuilderConfig,
    decode_timeout: float | None,
  ) -> None:
    """`skipped_before`: the records of the items found bad before decoding; `work_dir`: where
    the item files go."""
    super().__init__()
    self.items = items
    self.skipped_before = skipped_before
    self.skipped_path = skipped_path
    self.work_dir = work_dir
    self.config = config
    self.decode_timeout = decode_timeout

  def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
    results = (
      pbegin
      | "ItemFiles" >> beam.Create(write_chunks(self.items, self.work_dir))
      | "SpreadFiles" >> beam.Reshuffle()
      | "Items" >> beam.FlatMap(read_chunk)
      | "SpreadItems" >> beam.Reshuffle()
      | "Encode"
      >> beam.ParDo(EncodeVideos(self.config, self.decode_timeout)).with_outputs(
        SKIPPED_TAG, main="examples"
      )
    )
    _ = (
      results[SKIPPED_TAG]
      | "GatherSkipped" >> beam.combiners.ToList()
      | "WriteSkipped" >> beam.Map(_write_skipped, self.skipped_before, self.skipped_path)
    )
    return results.examples
