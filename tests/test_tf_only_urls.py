"""Storage that the project reaches only through TensorFlow's file system (issue 15, item 2).

TFDS reads a prepared dataset through etils.epath (its metadata) and tf.data (its records), so a
`gs://` data_dir is read by clients that the GCS emulator cannot stand in for (TensorFlow's GCS
client has no endpoint setting). The same code is tested here on TensorFlow's in-memory `ram://`
file system (tests/tf_only_url.py registers it with epath): a dataset in a URL data_dir is found,
opened and read by the training pipeline, batch for batch as from a local copy, and nothing is
made on the local disk.
"""

import numpy as np
import pytest
import tensorflow as tf

from configs.default import get_config
from dsanet_jax.common import data_spec, paths
from dsanet_jax.data import builders, pipeline
from tests import tf_only_url


def _copy_tree(src: str, dst: str) -> None:
  """Copies a local folder to a URL with tf.io.gfile (TensorFlow's file system only)."""
  for root, _, files in tf.io.gfile.walk(src):
    rel = root[len(src) :].lstrip("/")
    tf.io.gfile.makedirs(f"{dst}/{rel}" if rel else dst)
    for f in files:
      tf.io.gfile.copy(f"{root}/{f}", f"{dst}/{rel}/{f}" if rel else f"{dst}/{f}", overwrite=True)


def _spec(name: str, data_dir: str) -> data_spec.DataSpec:
  c = get_config()
  c.data.name, c.data.data_dir = name, data_dir
  c.data.num_frames, c.data.crop_size, c.data.shuffle_buffer = 2, 16, 4
  c.eval.short_side, c.eval.crop_size = 16, 16
  return data_spec.from_config(c)


def test_prepared_dataset_read_from_a_tensorflow_only_url(tmp_path, monkeypatch):
  local = tmp_path / "tfds"
  built = builders.ensure_prepared("order_of_events", str(local), num_train=8, num_validation=4)
  name = f"order_of_events/{built.builder_config.name}"  # read back by folder (not predefined)
  url = f"{tf_only_url.SCHEME}{tmp_path.name}/tfds"
  _copy_tree(str(local), url)
  monkeypatch.chdir(tmp_path)

  spec = _spec(name, url)
  builder = pipeline.load_builder(spec)
  assert str(builder.data_dir).startswith(f"{url}/order_of_events/"), builder.data_dir
  assert builder.info.splits["train"].num_examples == 8
  kw = dict(local_batch_size=4, process_index=0, process_count=1)
  got = next(pipeline.make_train_iterator(spec, builder=builder, **kw))
  ref_spec = _spec(name, str(local))
  want = next(pipeline.make_train_iterator(ref_spec, builder=pipeline.load_builder(ref_spec), **kw))
  assert got["video"].shape == (4, 4, 2, 16, 16, 3)
  for k in ("video", "label", "mask"):
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  ev = next(
    pipeline.make_eval_iterator(
      spec, split="validation", num_segments=4, num_crops=1, builder=builder, **kw
    )
  )
  assert ev["video"].shape[:3] == (4, 1, 4)
  assert not (tmp_path / "ram:").exists()  # no URL turned into a local folder name


def test_a_url_scheme_epath_knows_stays_a_url():
  """`paths.resolve` keeps a URL of any scheme epath has a path class for (the unknown ones:
  tests/test_paths.py)."""
  assert str(paths.resolve(f"{tf_only_url.SCHEME}x/y") / "z") == f"{tf_only_url.SCHEME}x/y/z"


def test_training_never_builds_in_a_url_data_dir(tmp_path, monkeypatch):
  """Object storage has no file lock, so the processes of a run cannot agree on who builds a
  missing dataset there: the training pipeline stops in one line naming the prepare command, and
  nothing is built (nor a local `ram:` folder made)."""
  monkeypatch.chdir(tmp_path)
  url = f"{tf_only_url.SCHEME}{tmp_path.name}/empty"
  with pytest.raises(ValueError) as e:
    pipeline.load_builder(_spec("order_of_events", url))
  assert str(e.value).endswith(
    f"python -m dsanet_jax.data.prepare --dataset=order_of_events --data_dir={url}"
  ), e.value
  assert not tf.io.gfile.exists(url) and not (tmp_path / "ram:").exists()
