"""Device mesh, sharding rules (replicate / FSDP) and the BatchNorm-group layout check.

The mesh has two axes, `data` and `fsdp` (config.mesh). A global batch is split over both axes
(`P(("data", "fsdp"))`), so every device holds `global_batch / num_devices` consecutive videos.
Parameters and optimiser state are replicated, except that with `mesh.fsdp > 1` every leaf with at
least `mesh.fsdp_min_size` elements is sharded over `fsdp` along its largest divisible dimension.
"""

from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXES = ("data", "fsdp")


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
  """Returns a `jax.sharding.Mesh` with axes ('data', 'fsdp') and Auto axis types.

  Args:
    mesh_cfg: `config.mesh` with `data` (-1 = the rest) and `fsdp` device counts.
    devices: the devices to use (default: all of `jax.devices()`).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  fsdp, data = int(mesh_cfg.fsdp), int(mesh_cfg.data)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices")
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(
      f"config.mesh.data={mesh_cfg.data} x config.mesh.fsdp={fsdp} != {n} devices; "
      "set mesh.data=-1 to use all remaining devices"
    )
  auto = jax.sharding.AxisType.Auto
  return jax.make_mesh((data, fsdp), ("data", "fsdp"), axis_types=(auto, auto), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a global batch: leading axis over ('data', 'fsdp'), the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int) -> P:
  """PartitionSpec for one array: shard its largest dim divisible by `fsdp_size` over 'fsdp'.

  Arrays smaller than `min_size` elements, or with no divisible dimension, are replicated.
  """
  if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, min_size: int) -> Any:
  """NamedShardings for every leaf of a (possibly abstract) train state, by the FSDP rule."""
  fsdp_size = mesh.shape["fsdp"]

  def rule(x: Any) -> NamedSharding:
    shape = getattr(x, "shape", ())
    return NamedSharding(mesh, fsdp_spec(shape, fsdp_size, min_size))

  return jax.tree.map(rule, abstract_state)


def with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying `shardings` (an abstract restore target)."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings
  )


def check_batch_layout(
  mesh: Mesh, global_batch: int, bn_group_size: int, *, process_count: int, what: str = "train"
) -> int:
  """Checks that a global batch splits over processes/devices and BN groups; returns per-device.

  BatchNorm groups are `bn_group_size` consecutive videos of the (micro)batch (0 = all). Each device
  holds a contiguous block of `global_batch / num_devices` videos, so a group stays on one device
  when the per-device batch is a multiple of the group size (the paper's per-GPU statistics), or
  covers whole devices when the group size is a multiple of the per-device batch.
  """
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(
      f"{what}: the global batch {global_batch} must be divisible by the {n} devices of the mesh"
    )
  if global_batch % process_count:
    raise ValueError(f"{what}: global batch {global_batch} not divisible by {process_count} hosts")
  per_device = global_batch // n
  g = bn_group_size
  if g and (global_batch % g or (per_device % g and g % per_device)):
    fix = max(d for d in range(1, min(g, per_device) + 1) if per_device % d == 0)
    why = (
      f"must divide the {what} (micro)batch of {global_batch}"
      if global_batch % g
      else f"straddles devices: each of the {n} devices holds {per_device} videos"
    )
    raise ValueError(
      f"config.model.bn_group_size={g} {why}; set --config.model.bn_group_size={fix} "
      f"(statistics per {fix} videos, a divisor of the {per_device} per device), or "
      "--config.model.bn_group_size=0 (over the whole batch)"
    )
  return per_device
