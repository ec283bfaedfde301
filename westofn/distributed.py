"""Multi-process start-up on JAX's own runtime (``jax.distributed``).

One process per host (TPU VM, SLURM task, GPU node), all running the same command. Process 0
writes what a run reports (config, metrics, reports, JSON records); every process writes its
shard of the Orbax checkpoints; each log line names the process that wrote it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

log = logging.getLogger("westofn")

@dataclasses.dataclass(frozen=True)
class DistributedFlags:
  """``--multiprocess`` and, where no cluster environment provides them (TPU VMs, SLURM
  and ``JAX_COORDINATOR_ADDRESS`` do), the coordinator and this process's place."""

  multiprocess: bool = False
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None


def initialize(flags: DistributedFlags) -> None:
  """Joins the run's other processes (``jax.distributed.initialize``), before any JAX
  computation. On CPUs the collectives go over Gloo."""
  if not flags.multiprocess:
    return
  import jax
  # Only the CPU backend reads this; on GPUs and TPUs their own collectives run.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=flags.coordinator_address,
                             num_processes=flags.num_processes, process_id=flags.process_id)
  tag_log_records(jax.process_index(), jax.process_count())
  log.info("joined %d processes; %d local of %d devices", jax.process_count(),
           jax.local_device_count(), jax.device_count())


def tag_log_records(index: int, count: int) -> None:
  """Prefixes every log record with ``[process i/n]``."""
  tag = f"[process {index}/{count}] "
  old = logging.getLogRecordFactory()

  def factory(*args, **kwargs):
    record = old(*args, **kwargs)
    record.msg = tag + str(record.msg)
    return record

  logging.setLogRecordFactory(factory)
