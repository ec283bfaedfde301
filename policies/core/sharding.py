"""Logical axis names → a device mesh: data parallelism, FSDP and tensor parallelism.

Parameters carry logical names (``transformer.annotated_param``); a rule table maps
them to the axes of a ``('data', 'fsdp', 'tensor')`` mesh, as MaxText and t5x do. The
same model code runs under every table: XLA's SPMD partitioner inserts the gathers
and reductions. Batches are split by rows over ``data`` × ``fsdp``; with several
processes (``jax.distributed``) each process hands JAX only the rows its own devices
hold (``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Mapping, Optional, Sequence, Union

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")   # rows of a batch are split over both

_REPLICATED = {"vocab": None, "embed": None, "q_heads": None, "kv_heads": None,
               "head_dim": None, "mlp": None}
# FSDP: every matrix is split along its model width; XLA gathers a layer's weights
# when it runs and reduce-scatters their gradients, and the optimizer state follows
# the parameters' placement.
_FSDP = dict(_REPLICATED, embed="fsdp")
# Megatron-style tensor parallelism: heads, the FFN width and the vocabulary split.
_TENSOR = dict(_REPLICATED, vocab="tensor", q_heads="tensor", kv_heads="tensor", mlp="tensor")
RULE_TABLES = {
    "data_parallel": tuple(_REPLICATED.items()),
    "fsdp": tuple(_FSDP.items()),
    "tensor_parallel": tuple(_TENSOR.items()),
    "fsdp_tensor": tuple(dict(_TENSOR, embed="fsdp").items()),
}


@dataclasses.dataclass(frozen=True)
class Partitioning:
  """How a run lays its arrays on devices (gin: ``train.partitioning = @Partitioning()``).

  ``mesh_shape``: size per mesh axis (``data``, ``fsdp``, ``tensor``); one axis may be
  -1 (every device the others leave). ``rules``: a table name from ``RULE_TABLES`` or
  explicit ``((logical name, mesh axis or None), ...)`` pairs.
  """

  mesh_shape: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"data": -1, "fsdp": 1, "tensor": 1})
  rules: Union[str, tuple] = "data_parallel"
  # Also log the activation (XLA temporary) bytes per device of a training step: one more
  # trace and lowering of the step before training.
  memory_report: bool = False

  def __post_init__(self):
    unknown = set(self.mesh_shape) - set(MESH_AXES)
    if unknown:
      raise ValueError(f"Partitioning.mesh_shape: unknown axes {sorted(unknown)}; the mesh "
                       f"axes are {MESH_AXES}")
    if isinstance(self.rules, str) and self.rules not in RULE_TABLES:
      raise ValueError(f"Partitioning.rules={self.rules!r}: give one of {sorted(RULE_TABLES)} "
                       "or ((logical name, mesh axis), ...) pairs")
    bad = [axis for _, axis in self.rule_table if axis is not None and axis not in MESH_AXES]
    if bad:
      raise ValueError(f"Partitioning.rules map to unknown mesh axes {bad}; the mesh axes are "
                       f"{MESH_AXES}")
    if sum(v == -1 for v in self.mesh_shape.values()) > 1:
      raise ValueError("Partitioning.mesh_shape: at most one axis may be -1")
    if any(v == 0 or v < -1 for v in self.mesh_shape.values()):
      raise ValueError(f"Partitioning.mesh_shape sizes must be >= 1 (or -1): {self.mesh_shape}")

  @property
  def rule_table(self) -> tuple:
    return RULE_TABLES[self.rules] if isinstance(self.rules, str) else tuple(self.rules)

  def axis_sizes(self, num_devices: int) -> tuple:
    sizes = [self.mesh_shape.get(a, 1) for a in MESH_AXES]
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if num_devices % fixed:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} does not divide {num_devices} "
                         "devices")
      sizes[sizes.index(-1)] = num_devices // fixed
    if math.prod(sizes) != num_devices:
      raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                       f"there are {num_devices}")
    return tuple(sizes)

  def place(self, module, mesh: Mesh) -> None:
    """Lays ``module`` (a model or its optimizer) out on ``mesh`` by this run's rules."""
    shard_module(module, mesh, self.rule_table)

  def describe(self, mesh: Mesh) -> str:
    name = self.rules if isinstance(self.rules, str) else "custom rules"
    return f"{name} on mesh {dict(mesh.shape)}"

  def mesh(self, devices: Optional[Sequence] = None) -> Mesh:
    """The mesh over ``devices`` (default: every device of every process). Devices are
    taken in process order, so that the rows of a batch a process holds are contiguous."""
    devices = list(devices if devices is not None else jax.devices())
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices).reshape(self.axis_sizes(len(devices))), MESH_AXES)


def logical_to_mesh_spec(names, rules, shape=None, mesh: Optional[Mesh] = None,
                         kept_whole: Optional[set] = None) -> P:
  """The PartitionSpec of an array with logical axis ``names``. With ``shape`` and
  ``mesh``, a dimension the mesh axis does not divide (SmolLM2's 9 heads over 2
  tensor-parallel devices) stays whole on that axis rather than failing; it is added
  to ``kept_whole`` as ``(name, size, mesh axis)``."""
  table = dict(rules)
  spec = []
  for i, n in enumerate(names):
    axis = table.get(n) if n is not None else None
    if axis is not None and shape is not None and mesh is not None and (
        shape[i] % mesh.shape[axis]):
      if kept_whole is not None:
        kept_whole.add((n, shape[i], axis))
      axis = None
    spec.append(axis)
  return P(*spec)


def shard_module(module, mesh: Mesh, rules) -> None:
  """Places every variable of ``module`` (a model or an ``nnx.Optimizer``, whose state
  carries its parameters' logical names) in place by its logical axis names."""
  state = nnx.state(module)
  kept_whole = set()

  def place(var):
    value = var[...]
    names = var.get_metadata().get("out_sharding") if hasattr(var, "get_metadata") else None
    spec = (logical_to_mesh_spec(names, rules, np.shape(value), mesh, kept_whole)
            if names and len(names) == np.ndim(value) else P())
    return jax.device_put(value, NamedSharding(mesh, spec))

  placed = jax.tree.map(lambda v: v.replace(place(v)), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))
  nnx.update(module, placed)
  for name, size, axis in sorted(kept_whole):
    log.info("logical axis %r (size %d) does not split over mesh axis %r (%d devices): "
             "kept whole", name, size, axis, mesh.shape[axis])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_parallelism(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def process_rows(mesh: Mesh, num_rows: int, process_index: int) -> slice:
  """The rows of a ``num_rows``-row global batch that ``process_index``'s devices hold.

  Row chunk ``i·fsdp + j`` goes to the devices at ``data = i``, ``fsdp = j`` (all of
  their ``tensor`` positions). A mesh from ``Partitioning.mesh`` orders devices by
  process, so each process holds one contiguous block of rows.
  """
  n = batch_parallelism(mesh)
  if num_rows % n:
    raise ValueError(f"a batch of {num_rows} rows does not split over {n} data-parallel "
                     "devices (data x fsdp): make rows a multiple of it")
  names = list(mesh.axis_names)
  grid = np.moveaxis(mesh.devices, [names.index(a) for a in MESH_AXES], [0, 1, 2])
  chunks = []
  for i, j in np.ndindex(*grid.shape[:2]):
    owners = {d.process_index for d in grid[i, j]}
    if len(owners) > 1:
      raise ValueError("a tensor-parallel group spans several processes: keep each group on "
                       "one host (Partitioning.mesh makes tensor the fastest-varying axis)")
    if owners == {process_index}:
      chunks.append(i * grid.shape[1] + j)
  if not chunks:
    raise ValueError(f"process {process_index} holds no device of the mesh")
  if chunks != list(range(chunks[0], chunks[-1] + 1)):
    raise ValueError(f"process {process_index}'s rows are not contiguous in this mesh: "
                     "build it with Partitioning.mesh")
  per = num_rows // n
  return slice(chunks[0] * per, (chunks[-1] + 1) * per)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Global arrays whose rows are split over ``data`` × ``fsdp``. Every process builds the
  same global batch (a pure function of the step), and hands over only its own rows."""
  n = batch_parallelism(mesh)
  for k, v in batch.items():
    if v.shape[0] % n:
      raise ValueError(f"batch field {k!r} has {v.shape[0]} rows, not divisible by "
                       f"{n} data-parallel devices (data x fsdp)")
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}
  out = {}
  for k, v in batch.items():
    rows = process_rows(mesh, v.shape[0], jax.process_index())
    out[k] = jax.make_array_from_process_local_data(sharding, np.asarray(v)[rows], v.shape)
  return out


def to_host(x) -> np.ndarray:
  """A global array as numpy on every process (gathered where this process lacks rows)."""
  if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def bytes_per_device(tree) -> int:
  """Bytes of the arrays of ``tree`` (e.g. an ``nnx.State``) that the first local device
  holds: its shard of each."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      # From the sharding, not the shards: reading ``addressable_shards`` of an array
      # replicated over processes with one device each fails in jax 0.10.
      total += int(np.prod(leaf.sharding.shard_shape(leaf.shape))) * leaf.dtype.itemsize
    elif hasattr(leaf, "nbytes"):
      total += leaf.nbytes
  return total
