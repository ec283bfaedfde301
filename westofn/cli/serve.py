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
import asyncio
import json
import logging
import time
from typing import Optional, Sequence

from policies.core.compile_meter import CompileMeter
from westofn.errors import ConfigError
from westofn.cli.common import configure_logging, run_cli

log = logging.getLogger("westofn")
MAX_WAIT_MS = 20.0   # bounds the wait for clients that do not come back (a call: 0.1-10 s)


class BadRequest(ValueError):
  """A request this server cannot score; its message goes back as the 400's error."""


def _text(value, field: str) -> str:
  if not isinstance(value, str) or not value:
    raise BadRequest(f"{field}: must be a non-empty string")
  return value


def parse_score_request(body) -> tuple[list, bool]:
  """``([(prompt, [responses])], many)`` from a ``/score`` body (one item or a list)."""
  from westofn.rewards import prompt_text
  many = isinstance(body, list)
  entries = body if many else [body]
  if not entries:
    raise BadRequest("body: an empty list")
  items = []
  for i, e in enumerate(entries):
    where = f"[{i}]." if many else ""
    if not isinstance(e, dict):
      raise BadRequest(f"{where or 'body'}: must be an object with prompt and responses")
    try:
      prompt = prompt_text(e.get("prompt"))
    except (TypeError, ValueError) as err:
      raise BadRequest(f"{where}prompt: {err}") from None
    if not prompt.strip():
      raise BadRequest(f"{where}prompt: missing or empty")
    responses = e.get("responses")
    if not isinstance(responses, list) or not responses:
      raise BadRequest(f"{where}responses: must be a non-empty list of strings")
    items.append((prompt, [_text(r, f"{where}responses[{j}]") for j, r in enumerate(responses)]))
  return items, many


def parse_get_reward_request(body) -> list:
  """``[(prompt, response)]`` from OpenRLHF's ``{"query", "prompts", "labels"}``: each query is
  its prompt followed by the response."""
  if not isinstance(body, dict):
    raise BadRequest("body: must be an object with query and prompts")
  queries, prompts = body.get("query"), body.get("prompts")
  if not isinstance(queries, list):
    raise BadRequest("query: must be a list of strings")
  if not isinstance(prompts, list) or len(prompts) != len(queries):
    raise BadRequest(f"prompts: must be a list of strings as long as query ({len(queries)})")
  out = []
  for i, (q, p) in enumerate(zip(queries, prompts)):
    q, p = _text(q, f"query[{i}]"), _text(p, f"prompts[{i}]")
    if not q.startswith(p):
      raise BadRequest(f"query[{i}]: does not start with prompts[{i}]")
    if len(q) == len(p):
      raise BadRequest(f"query[{i}]: holds no response after its prompt")
    out.append((p, q[len(p):]))
  return out


class Batcher:
  """Gathers concurrent requests into one scoring call. ``submit(items)`` returns their
  ``Scored`` results once the batch they joined is scored; one batch runs at a time, in a
  worker thread (JAX releases the GIL), while the next one gathers.

  A batch also waits, up to ``max_wait_s``, for the clients the last batch answered: a
  trainer's workers (or a load test's clients) answered together send their next requests
  within milliseconds of each other, and without the wait the first of them is scored alone
  while the rest queue behind it, so batches alternate small and large. The wait ends as
  soon as as many requests have come as were answered, so a lone client never waits."""

  def __init__(self, service, max_batch: int, max_wait_s: float):
    self.service, self.max_batch, self.max_wait_s = service, max_batch, max_wait_s
    self.queue: asyncio.Queue = asyncio.Queue()
    self.batches = self.responses = 0
    self._task: Optional[asyncio.Task] = None

  def start(self) -> None:
    self._task = asyncio.get_running_loop().create_task(self._run())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass

  async def submit(self, items: list) -> list:
    future = asyncio.get_running_loop().create_future()
    await self.queue.put((items, future))
    return await future

  async def _gather(self, expected: int) -> tuple[list, int]:
    """The next batch's requests (at least one) and how many responses they hold: what is
    queued, and up to ``max_wait_s`` more until ``expected`` requests have come."""
    loop = asyncio.get_running_loop()
    waiting = [await self.queue.get()]
    size = sum(len(r) for _, r in waiting[0][0])
    deadline = loop.time() + self.max_wait_s
    while size < self.max_batch:
      if self.queue.empty():
        # polled: cancelling a waiting queue.get() at a timeout can lose an item it took
        if len(waiting) >= expected or loop.time() >= deadline:
          break
        await asyncio.sleep(min(deadline - loop.time(), 0.001))
        continue
      nxt = self.queue.get_nowait()
      waiting.append(nxt)
      size += sum(len(r) for _, r in nxt[0])
    return waiting, size

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    expected = 1
    while True:
      waiting, size = await self._gather(expected)
      items = [item for request, _ in waiting for item in request]
      try:
        scored = await loop.run_in_executor(None, self.service.score, items)
      except Exception as e:  # noqa: BLE001 (handed to the requests that were waiting)
        for _, future in waiting:
          if not future.done():
            future.set_exception(e)
      else:
        self.batches += 1
        self.responses += size
        start = 0
        for request, future in waiting:
          if not future.done():
            future.set_result(scored[start:start + len(request)])
          start += len(request)
      # the requests that queued meanwhile, and the clients just answered coming back
      expected = self.queue.qsize() + len(waiting)


def make_app(service, *, max_batch: int = 256, max_wait_ms: float = MAX_WAIT_MS,
             max_body_mb: float = 16.0, compiles=None):
  """The aiohttp application: handlers, the batcher and the error middleware. ``compiles``
  (a ``CompileMeter`` opened when warm-up ended) puts the XLA compilations since then in
  ``/health``: with every shape warmed up there are none."""
  from aiohttp import web
  started = time.time()
  counters = {"requests": 0, "responses_scored": 0, "bad_requests": 0, "errors": 0,
              "truncated": 0}
  batcher = Batcher(service, max_batch, max_wait_ms / 1000)

  def error(status: int, message: str):
    counters["bad_requests" if status < 500 else "errors"] += 1
    return web.json_response({"error": message.replace("\n", " ")}, status=status)

  @web.middleware
  async def errors(request, handler):
    try:
      return await handler(request)
    except web.HTTPRequestEntityTooLarge as e:
      return error(413, f"body over {max_body_mb:g} MB ({e.text})")
    except web.HTTPException as e:
      if e.status >= 400:
        return error(e.status, e.reason)
      raise
    except BadRequest as e:
      return error(400, str(e))
    except Exception as e:  # noqa: BLE001 (a bug: logged, one line to the client)
      log.exception("request failed")
      return error(500, f"{type(e).__name__}: {e}")

  async def body_of(request):
    raw = await request.read()
    try:
      return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
      raise BadRequest(f"body: is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
      raise BadRequest(f"body: malformed JSON: {e.msg} at line {e.lineno} column "
                       f"{e.colno}") from None

  async def scored_items(items):
    counters["requests"] += 1
    scored = await batcher.submit(items)
    counters["responses_scored"] += sum(len(r) for _, r in items)
    counters["truncated"] += sum(s.truncated for s in scored)
    return scored

  async def score(request):
    items, many = parse_score_request(await body_of(request))
    scored = [s.as_dict() for s in await scored_items(items)]
    return web.json_response(scored if many else scored[0])

  async def get_reward(request):
    pairs = parse_get_reward_request(await body_of(request))
    if not pairs:   # OpenRLHF sends empty lists to its extra reward servers: nothing to score
      logs = {"truncated": [], **({"reward_std": []} if len(service.members) > 1 else {})}
      return web.json_response({"rewards": [], "scores": [], "extra_logs": logs})
    from westofn.rewards import group_by_prompt
    items, where = group_by_prompt([p for p, _ in pairs], [r for _, r in pairs])
    scored = await scored_items(items)
    rewards = [float(scored[i].rewards[j]) for i, j in where]
    logs = {"truncated": [float(min(scored[i].truncated, 1)) for i, _ in where]}
    if scored[0].std is not None:
      logs["reward_std"] = [float(scored[i].std[j]) for i, j in where]
    return web.json_response({"rewards": rewards, "scores": rewards, "extra_logs": logs})

  async def health(request):
    return web.json_response({"status": "ok", **service.identity,
                              "uptime_s": round(time.time() - started, 1),
                              **counters, "batches": batcher.batches,
                              "compiles_since_ready": compiles.cost.compiles if compiles else None})

  async def on_startup(app):
    batcher.start()

  async def on_cleanup(app):
    await batcher.stop()

  app = web.Application(middlewares=[errors], client_max_size=int(max_body_mb * 1024 ** 2))
  app.add_routes([web.post("/get_reward", get_reward), web.post("/score", score),
                  web.get("/health", health)])
  app.on_startup.append(on_startup)
  app.on_cleanup.append(on_cleanup)
  app["batcher"] = batcher
  return app


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
