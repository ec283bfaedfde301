r"""Serves a trained reward model over HTTP to the programs that train policies with it:
``python -m westofn.serve --model_dir=DIR [--stage=...] [--host=127.0.0.1] [--port=5000]
[--ensemble=DIR[:STAGE],...] [--uncertainty_k=1.0] [--max_batch=256]
[--max_wait_ms=20] [--matmul_dtype=bfloat16]``.

Endpoints (JSON in, JSON out):

* ``POST /get_reward``: OpenRLHF's remote reward protocol as its PPO client sends it
  (``--reward.remote_url http://HOST:PORT/get_reward``): ``{"query": [prompt + response
  texts], "prompts": [...], "labels": [...]}`` → ``{"rewards", "scores", "extra_logs"}``.
  Each query is split at its prompt (it must start with it);
* ``POST /score``: ``{"prompt", "responses": [...]}`` (a prompt may be chat messages), or a
  list of them → per item ``rewards``, ``rewards_normalized`` (the RM's held-out mean and
  std), ``truncated``; with ``--ensemble`` also each member's ``members`` rewards and the
  normalised ``mean`` and ``std``, and ``rewards`` is ``mean − k·std``;
* ``GET /health``: what is served (stages, config digests), uptime and counters.

Requests arriving together are scored together: a batcher gathers what is queued (up to
``--max_batch`` responses, waiting up to ``--max_wait_ms`` for the clients it last
answered) into the RM's fixed-shape rows, so concurrent clients fill one batch instead of
each paying a forward pass; nothing compiles after the warm-up that runs before the server
reports ready. A bad request gets a 400 (413 for a body over ``--max_body_mb``) with a
one-line JSON ``{"error": ...}``, and the server goes on serving the others. SIGTERM (or
Ctrl-C) stops accepting connections, lets requests in flight finish, then exits.

The stack is aiohttp: one well-kept package that is both an asyncio HTTP server (the batcher
is a coroutine beside the handlers, no thread pool between them) and the client that
OpenRLHF's own reward requests use; the tests and ``benchmarks/serve_load.py`` use its
client too.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Optional, Sequence

from policies.core.compile_meter import CompileMeter
from westofn.errors import ConfigError
from westofn.cli.common import configure_logging, run_cli
from westofn.serving.app import make_app
from westofn.serving.batcher import MAX_WAIT_MS

log = logging.getLogger("westofn")


def serve(*, model_dir: str, stage: Optional[str] = None, host: str = "127.0.0.1",
          port: int = 5000, ensemble: Sequence[str] = (), uncertainty_k: float = 1.0,
          max_batch: int = 256, max_wait_ms: float = MAX_WAIT_MS, max_body_mb: float = 16.0,
          matmul_dtype: Optional[str] = None) -> None:
  """Restores, warms up, then serves until SIGTERM/SIGINT."""
  from aiohttp import web
  from westofn.rewards import RewardService
  if max_batch < 1:
    raise ConfigError(f"--max_batch must be >= 1, got {max_batch}")
  if not 0 <= max_wait_ms <= 1000:
    raise ConfigError(f"--max_wait_ms must be in [0, 1000], got {max_wait_ms}")
  service = RewardService.restore(model_dir, stage, ensemble=ensemble,
                                  uncertainty_k=uncertainty_k, matmul_dtype=matmul_dtype)
  t0 = time.time()
  service.warm_up()
  log.info("warmed up in %.1f s: %s", time.time() - t0,
           ", ".join(m.name for m in service.members))
  compiles = CompileMeter().__enter__()   # counts for the server's life
  app = make_app(service, max_batch=max_batch, max_wait_ms=max_wait_ms,
                 max_body_mb=max_body_mb, compiles=compiles)

  def ready(_):
    print(f"westofn.serve: ready on http://{host}:{port} (POST /get_reward, POST /score, "
          "GET /health)", flush=True)

  # web.run_app turns SIGTERM and SIGINT into a graceful exit: the listening socket closes,
  # handlers in flight finish (up to shutdown_timeout), then the batcher stops.
  # No access log: a line per request would cost more than scoring it.
  web.run_app(app, host=host, port=port, print=ready, shutdown_timeout=60,
              handle_signals=True, access_log=None)


def main(argv: Sequence[str]) -> None:
  p = argparse.ArgumentParser(prog="python -m westofn.serve", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model_dir", required=True, help="a westofn.train MODEL_DIR")
  p.add_argument("--stage", default=None,
                 help="the RM stage (default: the newest West-of-N student, else base_rm)")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=5000)
  p.add_argument("--ensemble", default="",
                 help="more RMs: DIR[:STAGE], comma-separated; the reward is mean - k*std")
  p.add_argument("--uncertainty_k", type=float, default=1.0)
  p.add_argument("--max_batch", type=int, default=256,
                 help="responses gathered into one scoring call at most")
  p.add_argument("--max_wait_ms", type=float, default=MAX_WAIT_MS,
                 help="how long a batch waits for the clients the last batch answered to send "
                      "their next requests (a lone client never waits)")
  p.add_argument("--max_body_mb", type=float, default=16.0)
  p.add_argument("--matmul_dtype", default=None, choices=("bfloat16",),
                 help="mixed precision: the dense layers' and attention's matmuls with bf16 "
                      "operands and float32 accumulation, the dense weights stored in bf16 "
                      "(default: as the RM trained)")
  args = p.parse_args(argv)
  configure_logging()
  serve(model_dir=args.model_dir, stage=args.stage, host=args.host, port=args.port,
        ensemble=[e for e in args.ensemble.split(",") if e],
        uncertainty_k=args.uncertainty_k, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_body_mb=args.max_body_mb, matmul_dtype=args.matmul_dtype)


if __name__ == "__main__":
  run_cli(main)
