"""Multi-process start-up on JAX's own runtime (``jax.distributed``).

One process per host (TPU VM, SLURM task, GPU node), all running the same command. Process 0
writes what a run reports (config, metrics, reports, JSON records); every process writes its
shard of the Orbax checkpoints; each log line names the process that wrote it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from typing import Optional

log = logging.getLogger("westofn")
EXIT_PEER_LOST = 6
# The watchdog of this process's run (None: one process, nothing to watch); per process, as
# jax.distributed's own state is.
_watchdog: Optional["PeerWatchdog"] = None


@dataclasses.dataclass(frozen=True)
class DistributedFlags:
  """``--multiprocess`` and, where no cluster environment provides them (TPU VMs, SLURM
  and ``JAX_COORDINATOR_ADDRESS`` do), the coordinator and this process's place."""

  multiprocess: bool = False
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  # A process that sends the coordination service no heartbeat for this long is lost.
  heartbeat_timeout_s: int = 20


def initialize(flags: DistributedFlags) -> None:
  """Joins the run's other processes (``jax.distributed.initialize``), before any JAX
  computation. On CPUs the collectives go over Gloo."""
  if not flags.multiprocess:
    return
  import jax
  # Only the CPU backend reads this; on GPUs and TPUs their own collectives run.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # A lost process is then reported to the others (``get_live_nodes``) instead of making
  # the coordination service abort them all with pages of C++ log (see ``finish``).
  jax.config.update("jax_enable_recoverability", True)
  jax.distributed.initialize(coordinator_address=flags.coordinator_address,
                             num_processes=flags.num_processes, process_id=flags.process_id,
                             heartbeat_timeout_seconds=flags.heartbeat_timeout_s)
  tag_log_records(jax.process_index(), jax.process_count())
  log.info("joined %d processes; %d local of %d devices", jax.process_count(),
           jax.local_device_count(), jax.device_count())
  global _watchdog
  _watchdog = PeerWatchdog(jax.process_index(), jax.process_count(), flags.heartbeat_timeout_s)
  _watchdog.start()


class PeerWatchdog:
  """Asks JAX's coordination service, every ``interval_s``, which processes of the run are
  alive (``get_live_nodes``, answered once every live process has asked). When one is
  lost (killed, crashed, its host gone) this process says so in one line and ends with
  ``EXIT_PEER_LOST`` within about ``heartbeat_timeout_s``, instead of waiting in a
  collective that will never complete; the same command on every host resumes the run
  from its last verified checkpoint."""

  def __init__(self, index: int, count: int, heartbeat_timeout_s: int,
               interval_s: float = 2.0):
    self.index, self.count = index, count
    self.heartbeat_timeout_s, self.interval_s = heartbeat_timeout_s, interval_s
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, name="westofn-peer-watchdog",
                                    daemon=True)

  def start(self) -> None:
    self._thread.start()

  def stop(self) -> None:
    """The run is over: a process that finishes first is not a lost one."""
    self._stop.set()

  def _watch(self) -> None:
    from jax._src import distributed as jax_distributed
    client = jax_distributed.global_state.client
    everyone = list(range(self.count))
    while not self._stop.wait(self.interval_s):
      try:
        live = client.get_live_nodes(everyone)
      except Exception as e:  # noqa: BLE001 (the coordinator itself is unreachable)
        if self._stop.is_set():
          return
        lost, why = [0], f"the coordination service it hosts is unreachable ({type(e).__name__})"
      else:
        lost = [i for i in everyone if i not in live]
        why = f"it sent no heartbeat for {self.heartbeat_timeout_s} s"
      if lost and not self._stop.is_set():
        self.lose(lost, why)

  def lose(self, lost, why: str) -> None:
    names = ", ".join(f"process {i}" + (" (the coordinator)" if i == 0 else "") for i in lost)
    print(f"westofn: error: [process {self.index}/{self.count}] {names} of {self.count} "
          f"{'is' if len(lost) == 1 else 'are'} lost: {why} (killed, crashed or its host went "
          "down); this process stops too. Run the same command on every host again: it "
          "resumes from the last verified checkpoint", file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_LOST)   # not sys.exit: the main thread may be stuck in a collective


def finish(*, completed: bool) -> None:
  """The run ended; stop watching the peers.

  With recoverability on, JAX's own shutdown barrier no longer holds processes together,
  so a completed run does it here: every process waits until all have completed (none
  leaves while another still works and is taken for lost), then the others disconnect
  before process 0 takes the coordination service down with it (a process whose
  disconnect finds no service aborts). A failed run only stops watching; ``exit_now``
  then leaves without the disconnect."""
  if _watchdog is None:
    return
  from jax._src import distributed as jax_distributed
  client = jax_distributed.global_state.client
  if completed:
    client.wait_at_barrier("westofn_run_complete", 3600 * 1000)
  _watchdog.stop()
  if not completed:
    return
  if _watchdog.index != 0:
    import jax
    jax.distributed.shutdown()
    return
  everyone = list(range(_watchdog.count))
  deadline = time.time() + 60
  while len(client.get_live_nodes(everyone)) > 1 and time.time() < deadline:
    time.sleep(0.1)


def exit_now(code: int) -> None:
  """Ends a failed process of a multi-process run at once (its message printed): JAX's
  disconnect at exit would abort with pages of log if process 0 is already gone."""
  if _watchdog is not None:
    sys.stderr.flush()
    os._exit(code)


def await_lost_peer(error: BaseException) -> None:
  """After ``error`` in a multi-process run: if it came from a peer that died (a failed
  collective), the watchdog ends this process within the heartbeat timeout with its one
  line; wait for that rather than print a traceback first. Returns if no peer is lost."""
  import jax
  if _watchdog is None or not isinstance(error, jax.errors.JaxRuntimeError):
    return
  _watchdog._thread.join(timeout=_watchdog.heartbeat_timeout_s + 3 * _watchdog.interval_s)


def tag_log_records(index: int, count: int) -> None:
  """Prefixes every log record with ``[process i/n]``."""
  tag = f"[process {index}/{count}] "
  old = logging.getLogRecordFactory()

  def factory(*args, **kwargs):
    record = old(*args, **kwargs)
    record.msg = tag + str(record.msg)
    return record

  logging.setLogRecordFactory(factory)
