"""The reward server's aiohttp application: the handlers of ``/get_reward``, ``/score`` and
``/health``, the batcher beside them, and the middleware that turns a bad request into a
one-line JSON error without stopping the others."""

from __future__ import annotations

import json
import logging
import time

from westofn.serving.batcher import MAX_WAIT_MS, Batcher
from westofn.serving.requests import BadRequest, parse_get_reward_request, parse_score_request

log = logging.getLogger("westofn")


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
