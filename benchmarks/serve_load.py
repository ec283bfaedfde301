"""Load on the reward server: ``westofn.serve`` against OpenRLHF's server design on the same
reward model, side by side on this host, loopback only:

    python benchmarks/serve_load.py --model_dir=DIR [--clients 1,8,32,128] [--seconds 20] \\
        [--out benchmarks/results/serve_load_smollm2.md]

DIR is a westofn.train MODEL_DIR with a pointwise RM stage (``--stage``, default as
``westofn.score``'s; a SmolLM2 RM from ``gin/smollm2_hh.gin`` is the recorded one). It is
exported once (``westofn.export``) to a Hugging Face directory for the peer.

* **westofn**: ``python -m westofn.serve`` (requests batched together, the RM's rows), as the
  RM trained (float32) and with ``--matmul_dtype=bfloat16`` (mixed precision), the latter also
  with ``--max_wait_ms=0`` (a batch does not wait for the clients the last one answered), to
  show what the wait buys; its ``/health`` counters give the requests a batch held.
* **peer**: OpenRLHF's ``openrlhf/cli/serve_rm.py`` design reproduced here: FastAPI + uvicorn,
  ``POST /get_reward`` running one forward of ``AutoModelForSequenceClassification`` over each
  request's queries as they come (left padding, ``max_len`` 2048), nothing shared between
  requests. Its float32 and bfloat16 configurations are both measured; the faster counts.

Every request is OpenRLHF's ``{"query", "prompts", "labels"}`` with one prompt and
``--group`` responses (a PPO/GRPO group), the query rendered through the model's chat
template as OpenRLHF renders it; both servers get the same bytes. For each number of
concurrent clients (each sends its next request when the last is answered) the run lasts
``--seconds`` or ``--max_requests`` requests, whichever comes first: requests/s, responses
scored/s, p50/p99 latency. Every server runs from the start, and each load runs on every
server in turn, so the sides of a load are measured minutes apart, not a whole run apart.
"""


import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import bench_common

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def peer_app(hf_dir: str, dtype: str):
  """OpenRLHF's serve_rm design: one forward per request over its queries."""
  import torch
  import transformers
  from fastapi import FastAPI, Request
  from fastapi.responses import JSONResponse
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir, padding_side="left")
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      hf_dir, dtype=getattr(torch, dtype)).eval()
  app = FastAPI()

  @app.post("/get_reward")
  async def get_reward(request: Request):
    data = await request.json()
    queries = data.get("query")
    with torch.no_grad():
      batch = tok(queries, return_tensors="pt", add_special_tokens=False, max_length=2048,
                  padding=True, truncation=True)
      rewards = model(**batch).logits[:, 0].float().tolist()
    return JSONResponse({"rewards": rewards, "scores": rewards,
                         "extra_logs": {"dummy_scores": rewards}})

  return app


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(cmd: list, ready: str, port: int) -> subprocess.Popen:
  """The server, once it printed ``ready`` and accepts connections on ``port``."""
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if ready in line:
      threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
      for _ in range(600):
        try:
          socket.create_connection(("127.0.0.1", port), timeout=1).close()
          return proc
        except OSError:
          time.sleep(0.1)
      break
  proc.kill()
  raise SystemExit(f"{' '.join(cmd)} did not start:\n{''.join(lines)[-3000:]}")


def health(port: int) -> dict:
  import urllib.request
  with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=60) as r:
    return json.load(r)


async def load(url: str, bodies: list, clients: int, seconds: float, max_requests: int) -> dict:
  import aiohttp
  latencies, responses = [], 0
  deadline = time.perf_counter() + seconds
  sent = 0

  async def client(session, k):
    nonlocal responses, sent
    i = k
    while time.perf_counter() < deadline and sent < max_requests:
      sent += 1
      body = bodies[i % len(bodies)]
      t = time.perf_counter()
      async with session.post(url, json=body) as r:
        got = await r.json()
        assert r.status == 200 and len(got["rewards"]) == len(body["query"]), got
      latencies.append(time.perf_counter() - t)
      responses += len(body["query"])
      i += clients

  t0 = time.perf_counter()
  timeout = aiohttp.ClientTimeout(total=None)
  async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                   timeout=timeout) as session:
    await asyncio.gather(*[client(session, k) for k in range(clients)])
  wall = time.perf_counter() - t0
  lat = np.asarray(latencies) * 1000
  return {"clients": clients, "requests": len(latencies), "wall_s": round(wall, 2),
          "requests_per_s": len(latencies) / wall, "responses_per_s": responses / wall,
          "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def requests_from(model_dir: str, hf_dir: str, group: int, count: int) -> tuple[list, list]:
  """OpenRLHF bodies made from the run's held-out HH pairs: the prompt rendered through the
  chat template, each query the prompt, a response and the end-of-turn token."""
  import transformers
  from rm.bpe_vocabulary import hh_to_messages
  from rm_commands_hh import _heldout
  from westofn.restore import load_run
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  pairs = _heldout(load_run(model_dir))
  bodies = []
  for i in range(count):
    head = tok.apply_chat_template(hh_to_messages(pairs[i % len(pairs)].prompt),
                                   add_generation_prompt=True, tokenize=False)
    answers = [pairs[(i + j) % len(pairs)].chosen.strip() for j in range(group)]
    bodies.append({"query": [head + a + tok.eos_token for a in answers],
                   "prompts": [head] * group, "labels": [""] * group})
  return bodies, pairs


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "--_peer":
    import uvicorn
    _, _, hf_dir, dtype, port = sys.argv
    app = peer_app(hf_dir, dtype)
    print("peer ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")
    return
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--stage", default=None)
  parser.add_argument("--clients", default="1,8,32,128")
  parser.add_argument("--group", type=int, default=4, help="responses per request")
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--max_requests", type=int, default=400)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  clients = [int(c) for c in args.clients.split(",")]
  with tempfile.TemporaryDirectory() as tmp:
    hf_dir = os.path.join(tmp, "hf")
    subprocess.run([sys.executable, "-m", "westofn.export", f"--model_dir={args.model_dir}",
                    f"--out={hf_dir}"] + ([f"--stage={args.stage}"] if args.stage else []),
                   cwd=REPO, check=True, capture_output=True)
    bodies, _ = requests_from(args.model_dir, hf_dir, args.group, 64)
    results = {}
    serve = [sys.executable, "-m", "westofn.serve", f"--model_dir={args.model_dir}"] + (
        [f"--stage={args.stage}"] if args.stage else [])
    sides = [("westofn (as trained)", serve, "ready on"),
             ("westofn (mixed bf16, no batch wait)",
              serve + ["--matmul_dtype=bfloat16", "--max_wait_ms=0"], "ready on"),
             ("westofn (mixed bf16)", serve + ["--matmul_dtype=bfloat16"], "ready on")]
    sides += [(f"peer ({dtype})", [sys.executable, os.path.abspath(__file__), "--_peer", hf_dir,
                                   dtype], "peer ready") for dtype in ("float32", "bfloat16")]
    # Every server is started (and warmed) first, then each load runs on every server in
    # turn: the sides of one load are measured minutes apart, not a whole run apart (this
    # host's speed drifted by a fifth within one run when each side ran all its loads alone).
    running = {}
    try:
      for name, cmd, ready in sides:
        port = _free_port()
        ours = name.startswith("westofn")
        running[name] = (start(cmd + ([f"--port={port}"] if ours else [str(port)]), ready,
                               port), port, ours)
        url = f"http://127.0.0.1:{port}/get_reward"
        asyncio.run(load(url, bodies[:2], 1, 60, 2))   # warm: first requests, allocator
        results[name] = []
      for c in clients:
        for name, (_, port, ours) in running.items():
          url = f"http://127.0.0.1:{port}/get_reward"
          before = health(port) if ours else None
          r = asyncio.run(load(url, bodies, c, args.seconds, args.max_requests))
          if ours:   # the batches the server formed under this load
            after = health(port)
            r["requests_per_batch"] = ((after["requests"] - before["requests"])
                                       / max(1, after["batches"] - before["batches"]))
          results[name].append(r)
          print(f"{name}: {r['clients']} clients: {r['responses_per_s']:.1f} responses/s, "
                f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms", flush=True)
    finally:
      for proc, _, _ in running.values():
        proc.terminate()
      for proc, _, _ in running.values():
        proc.wait(timeout=120)
  peers = [k for k in results if k.startswith("peer")]
  mine = [k for k in results if k.startswith("westofn")]
  lines = ["# Reward server under load: westofn.serve against OpenRLHF's server design", "",
           f"`python benchmarks/serve_load.py --model_dir={args.model_dir} --clients "
           f"{args.clients} --group {args.group} --seconds {args.seconds:g} --max_requests "
           f"{args.max_requests}` ({time.strftime('%Y-%m-%d')})", "", bench_common.host_header()
           + ", fastapi/uvicorn as installed", "",
           f"Each request: OpenRLHF's `/get_reward` body with one HH prompt and {args.group} "
           "responses (chat-template-rendered queries); loopback; each client sends its next "
           "request when the last is answered. All servers run throughout; each load runs on "
           "every server in turn, in the table's order.", "",
           "| server | clients | requests | requests/s | responses scored/s | p50 ms | p99 ms | "
           "requests a batch |", "|---|---|---|---|---|---|---|---|"]
  for name, rows in results.items():
    lines += [f"| {name} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.2f} | "
              f"{r['responses_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              + (f"{r['requests_per_batch']:.1f} |" if "requests_per_batch" in r else "— |")
              for r in rows]
  lines += ["", "Responses scored per second, westofn's faster configuration against the "
            "peer's faster one, at each load:", ""]
  for i, c in enumerate(clients):
    best = max(peers, key=lambda k: results[k][i]["responses_per_s"])
    ours = max(mine, key=lambda k: results[k][i]["responses_per_s"])
    ratio = results[ours][i]["responses_per_s"] / results[best][i]["responses_per_s"]
    lines.append(f"- {c} clients: {ratio:.2f}x ({ours} against {best})")
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    from policies.core.atomic import write_text_atomic
    write_text_atomic(args.out, text)
  with open(os.path.join(tempfile.gettempdir(), "serve_load.json"), "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main()
