"""Serving the reward model: westofn/serve.py's HTTP server, started on 127.0.0.1 and talked
to with a real HTTP client (aiohttp's, as OpenRLHF's PPO uses), and westofn/rewards.py's
ensemble and TRL reward function (run inside TRL's GRPOTrainer)."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import aiohttp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.test_train import run_main
from westofn import rewards as rewards_lib
from westofn.rewards import RewardService, ensemble_stats, group_by_prompt, reward_fn

pytestmark = pytest.mark.slow   # end-to-end or real models: see pytest.ini

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(root, seed):
  model_dir = str(root / f"run{seed}")
  run_main(["--gin_file=gin/demo.gin", f"--gin.MODEL_DIR={model_dir}",
            "--gin.RewardModelRecipe.num_steps=30",
            "--gin.RunSettings.eval_every=0", "--gin.DataSource.default_num_pairs=300",
            f"--gin.RunSettings.seed={seed}", "--gin.RunSettings.progress=False"])
  return model_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve")
  return [_train(root, 0), _train(root, 1)]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
  """``python -m westofn.serve`` in a subprocess, ready once it prints so."""

  def __init__(self, *args):
    self.port = _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self.proc = subprocess.Popen([sys.executable, "-m", "westofn.serve", f"--port={self.port}",
                                  *args], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    self.log = []
    deadline = time.time() + 600
    for line in self.proc.stdout:
      self.log.append(line)
      if "ready on http://" in line:
        break
      if time.time() > deadline:
        break
    assert self.proc.poll() is None and "ready on" in "".join(self.log), "".join(self.log)[-3000:]
    # keep reading its output, so a full pipe never blocks the server
    self._reader = threading.Thread(target=lambda: self.log.extend(self.proc.stdout),
                                    daemon=True)
    self._reader.start()

  def stop(self):
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
    self.proc.wait(timeout=120)
    self._reader.join(timeout=10)
    return self.proc.returncode


@pytest.fixture(scope="module")
def server(runs):
  s = Server(f"--model_dir={runs[0]}", "--max_body_mb=0.05", "--max_batch=64")
  yield s
  s.stop()


@pytest.fixture(scope="module")
def ensemble_server(runs):
  s = Server(f"--model_dir={runs[0]}", f"--ensemble={runs[1]}:base_rm", "--uncertainty_k=0.5")
  yield s
  s.stop()


async def _post(session, url, body=None, data=None):
  async with session.post(url, json=body, data=data) as r:
    return r.status, await r.json()


def post(url, body=None, data=None):
  async def go():
    async with aiohttp.ClientSession() as session:
      return await _post(session, url, body, data)
  return asyncio.run(go())


def get(url):
  async def go():
    async with aiohttp.ClientSession() as session:
      async with session.get(url) as r:
        return r.status, await r.json()
  return asyncio.run(go())


def many(url, bodies):
  """All requests at once, each on its own connection."""
  async def go():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
      return await asyncio.gather(*[_post(session, url, b) for b in bodies])
  return asyncio.run(go())


PROMPTS = [f"Q: Ann needs {k} letters, mostly 'a'.\nA:" for k in range(3, 11)]


def test_score_and_get_reward_protocols_agree_with_the_rm(server, runs):
  status, one = post(server.url + "/score", {"prompt": PROMPTS[0], "responses": ["aaa", "bcd"]})
  assert status == 200 and len(one["rewards"]) == 2 and one["truncated"] == 0
  # the same rewards as the RM restored in this process and scored directly
  service = RewardService.restore(runs[0])
  want = service.score([(PROMPTS[0], ["aaa", "bcd"])])[0]
  np.testing.assert_allclose(one["rewards"], want.rewards, atol=1e-5)
  _, health = get(server.url + "/health")
  mean, std = health["members"][0]["reward_mean"], health["members"][0]["reward_std"]
  np.testing.assert_allclose(one["rewards_normalized"],
                             (np.asarray(one["rewards"]) - mean) / std, rtol=1e-6)
  # a list of items, a prompt as chat messages
  status, listed = post(server.url + "/score", [
      {"prompt": PROMPTS[0], "responses": ["aaa"]},
      {"prompt": [{"role": "user", "content": "Bea needs 4 letters, mostly 'b'."}],
       "responses": ["bbbb", "b"]}])
  assert status == 200 and [len(x["rewards"]) for x in listed] == [1, 2]
  assert listed[0]["rewards"][0] == pytest.approx(one["rewards"][0], abs=1e-5)
  # OpenRLHF: full texts split at their prompts
  status, rl = post(server.url + "/get_reward", {
      "query": [PROMPTS[0] + "aaa", PROMPTS[0] + "bcd", PROMPTS[1] + "x"],
      "prompts": [PROMPTS[0], PROMPTS[0], PROMPTS[1]], "labels": ["", "", ""]})
  assert status == 200 and rl["rewards"] == rl["scores"]
  np.testing.assert_allclose(rl["rewards"][:2], one["rewards"], atol=1e-5)
  assert rl["extra_logs"]["truncated"] == [0.0, 0.0, 0.0]


def test_concurrent_requests_are_batched_and_answers_land_with_their_request(server):
  rng = np.random.default_rng(0)
  bodies = [{"prompt": PROMPTS[i % len(PROMPTS)],
             "responses": ["".join(rng.choice(list("abcde"), rng.integers(1, 12)))
                           for _ in range(rng.integers(1, 5))]} for i in range(40)]
  alone = [post(server.url + "/score", b)[1]["rewards"] for b in bodies[:8]]
  _, before = get(server.url + "/health")
  together = many(server.url + "/score", bodies)
  _, after = get(server.url + "/health")
  assert all(status == 200 for status, _ in together)
  for got, want in zip(together[:8], alone):
    np.testing.assert_allclose(got[1]["rewards"], want, atol=1e-5)
  assert [len(r["rewards"]) for _, r in together] == [len(b["responses"]) for b in bodies]
  assert after["requests"] - before["requests"] == 40
  assert after["batches"] - before["batches"] < 40          # requests shared batches
  assert after["compiles_since_ready"] == 0                # no shape compiled after warm-up


def test_long_responses_are_cut_and_counted(server):
  status, r = post(server.url + "/score", {"prompt": PROMPTS[0], "responses": ["a" * 500, "ab"]})
  assert status == 200 and r["truncated"] == 1


@pytest.mark.parametrize("body,data,status,message", [
    (None, b"{not json", 400, "malformed JSON"),
    (None, b"\xff\xfe{}", 400, "not valid UTF-8"),
    ({"prompt": "p"}, None, 400, "responses: must be a non-empty list"),
    ({"prompt": "p", "responses": []}, None, 400, "responses: must be a non-empty list"),
    ({"prompt": "", "responses": ["a"]}, None, 400, "prompt: missing or empty"),
    ({"prompt": "p", "responses": ["a", 3]}, None, 400, "responses[1]: must be a non-empty"),
    ([], None, 400, "empty list"),
    (None, json.dumps({"prompt": "p", "responses": ["a" * 60000]}).encode(), 413, "body over"),
])
def test_bad_score_requests_get_one_line_errors(server, body, data, status, message):
  got_status, got = post(server.url + "/score", body, data)
  assert got_status == status and message in got["error"] and "\n" not in got["error"]
  assert post(server.url + "/score", {"prompt": "p", "responses": ["a"]})[0] == 200


@pytest.mark.parametrize("body,message", [
    ({"query": ["pa"], "prompts": ["x"]}, "query[0]: does not start with prompts[0]"),
    ({"query": ["pa"]}, "prompts: must be a list"),
    ({"query": "pa", "prompts": ["p"]}, "query: must be a list"),
    ({"query": [], "prompts": ["p"]}, "prompts: must be a list of strings as long as query (0)"),
    ({"query": ["p"], "prompts": ["p"]}, "holds no response"),
])
def test_bad_get_reward_requests(server, body, message):
  status, got = post(server.url + "/get_reward", body)
  assert status == 400 and message in got["error"]


def test_an_empty_query_list_gets_empty_lists(server, ensemble_server):
  # OpenRLHF sends empty lists to its extra reward servers; its own server would crash on them.
  empty = {"query": [], "prompts": [], "labels": []}
  assert post(server.url + "/get_reward", empty) == (
      200, {"rewards": [], "scores": [], "extra_logs": {"truncated": []}})
  assert post(ensemble_server.url + "/get_reward", empty) == (
      200, {"rewards": [], "scores": [], "extra_logs": {"truncated": [], "reward_std": []}})
  status, got = post(server.url + "/get_reward", {"query": [PROMPTS[0] + "aa"],
                                                  "prompts": [PROMPTS[0]]})
  assert status == 200 and len(got["rewards"]) == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["prompt", "responses", "response", "query", "prompts", "labels", "x"]),
        inner, max_size=4), max_leaves=12)
PATHS = st.sampled_from(["/score", "/get_reward", "/health", "/", "/score/", "/nope"]) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz_-./%0123456789", max_size=24).map(lambda t: "/" + t)


def request(url, method, data: bytes):
  async def go():
    async with aiohttp.ClientSession() as session:
      async with session.request(method, url, data=data,
                                 headers={"Content-Type": "application/json"}) as r:
        await r.read()
        return r.status
  return asyncio.run(go())


def test_random_and_malformed_requests_never_get_a_5xx(server):
  good = {"prompt": PROMPTS[1], "responses": ["aaa", "abc"]}
  status, before = post(server.url + "/score", good)
  assert status == 200

  @settings(max_examples=80, deadline=None, derandomize=True)
  @given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
         path=PATHS, body=JSON.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64))
  def one(method, path, body):
    status = request(server.url + path, method, body)
    assert status < 500, (method, path, body)

  one()
  assert post(server.url + "/score", good) == (200, before)   # the same rewards afterwards


def test_ensemble_reward_is_mean_minus_k_std_of_normalised_members(ensemble_server, server):
  body = {"prompt": PROMPTS[2], "responses": ["aaaaa", "abcab", "e"]}
  status, got = post(ensemble_server.url + "/score", body)
  assert status == 200
  _, health = get(ensemble_server.url + "/health")
  members = health["members"]
  raw = np.array([got["members"][m["model"]] for m in members])
  scale = np.array([[m["reward_mean"], m["reward_std"]] for m in members])
  normalized = (raw - scale[:, :1]) / scale[:, 1:]
  np.testing.assert_allclose(got["mean"], normalized.mean(0), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(got["std"], normalized.std(0), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(got["rewards"], normalized.mean(0) - 0.5 * normalized.std(0),
                             rtol=1e-6, atol=1e-9)
  # the first member is the single server's model
  np.testing.assert_allclose(raw[0], post(server.url + "/score", body)[1]["rewards"], atol=1e-5)
  status, rl = post(ensemble_server.url + "/get_reward",
                    {"query": [PROMPTS[2] + "aaaaa"], "prompts": [PROMPTS[2]], "labels": [""]})
  assert rl["rewards"][0] == pytest.approx(got["rewards"][0], abs=1e-6)
  assert rl["extra_logs"]["reward_std"][0] == pytest.approx(got["std"][0], abs=1e-6)


def test_ensemble_stats_against_numpy_and_shapes():
  r = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])
  mean, std, pen = ensemble_stats(r, 2.0)
  np.testing.assert_allclose(mean, [2.0, 1.0])
  np.testing.assert_allclose(std, np.std(r, axis=0))
  np.testing.assert_allclose(pen, mean - 2.0 * np.std(r, axis=0))
  with pytest.raises(ValueError, match="members >= 2"):
    ensemble_stats(np.ones((1, 3)), 1.0)
  with pytest.raises(ValueError, match="members >= 2"):
    ensemble_stats(np.ones(3), 1.0)


def test_sigterm_finishes_requests_in_flight_then_exits(runs):
  s = Server(f"--model_dir={runs[0]}", "--max_batch=256")
  # ~8,000 responses: seconds of scoring, so most requests are in flight at the SIGTERM
  bodies = [{"prompt": PROMPTS[i % 8], "responses": [f"{'abc' * (j % 9 + 1)}" for j in range(256)]}
            for i in range(32)]
  done = {}

  async def go():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
      async def one(i, b):
        status, body = await _post(session, s.url + "/score", b)
        done[i] = time.time()
        return status, body
      tasks = [asyncio.create_task(one(i, b)) for i, b in enumerate(bodies)]
      await asyncio.sleep(0.5)                 # all sent and read; most still to be scored
      signalled = time.time()
      s.proc.send_signal(signal.SIGTERM)
      return signalled, await asyncio.gather(*tasks)

  signalled, results = asyncio.run(go())
  assert [status for status, _ in results] == [200] * len(bodies)
  assert [len(r["rewards"]) for _, r in results] == [256] * len(bodies)
  assert max(done.values()) > signalled      # some were still in flight at the SIGTERM
  assert s.proc.wait(timeout=120) == 0       # then it exited by itself, cleanly
  with pytest.raises(aiohttp.ClientConnectionError):
    post(s.url + "/score", bodies[0])


def test_reward_fn_takes_trl_conversations_and_groups_prompts(runs):
  f = reward_fn(runs[0])
  service = f.service
  plain = f(prompts=[PROMPTS[0], PROMPTS[0], PROMPTS[1]], completions=["aaa", "bcd", "x"],
            completion_ids=None, trainer_state=None)
  want = service.score([(PROMPTS[0], ["aaa", "bcd"]), (PROMPTS[1], ["x"])])
  np.testing.assert_allclose(plain, list(want[0].rewards) + list(want[1].rewards), atol=1e-6)
  conversation = [{"role": "user", "content": "Bea needs 4 letters, mostly 'b'."}]
  chat = f(prompts=[conversation, conversation],
           completions=[[{"role": "assistant", "content": "bbbb"}],
                        [{"role": "assistant", "content": "b"}]])
  text = rewards_lib.prompt_text(conversation)
  np.testing.assert_allclose(chat, service.score([(text, ["bbbb", "b"])])[0].rewards, atol=1e-6)
  items, where = group_by_prompt(["p", "q", "p"], ["a", "b", "c"])
  assert items == [("p", ["a", "c"]), ("q", ["b"])] and where == [(0, 0), (1, 0), (0, 1)]
  normalized = reward_fn(runs[0], normalize=True)(prompts=[PROMPTS[0]], completions=["aaa"])
  m = service.members[0]
  assert normalized[0] == pytest.approx((plain[0] - m.mean) / m.std, rel=1e-6)


def _tiny_causal_lm(path):
  """A 1-layer Llama and a byte-level tokenizer, written where GRPOTrainer can load them."""
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  vocab = {c: i for i, c in enumerate(sorted(alphabet))}
  vocab.update({"<eos>": len(vocab), "<pad>": len(vocab) + 1})
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>",
                                              pad_token="<pad>")
  cfg = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1, max_position_embeddings=128,
                                 eos_token_id=vocab["<eos>"], pad_token_id=vocab["<pad>"],
                                 bos_token_id=None)
  transformers.LlamaForCausalLM(cfg).save_pretrained(path)
  fast.save_pretrained(path)
  return str(path)


def test_trl_grpo_trains_two_steps_with_the_reward_function(runs, tmp_path):
  trl = pytest.importorskip("trl")
  import datasets
  policy = _tiny_causal_lm(tmp_path / "policy")
  f = reward_fn(runs[0])
  seen = []

  def recorded(prompts, completions, **kwargs):
    out = f(prompts, completions, **kwargs)
    seen.append((list(prompts), list(completions), out))
    return out
  recorded.__name__ = "westofn_reward"
  args = trl.GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                        num_generations=2, max_completion_length=6, max_steps=2,
                        learning_rate=1e-3, logging_steps=1, save_strategy="no",
                        report_to=[], use_cpu=True, bf16=False, seed=0)
  trainer = trl.GRPOTrainer(model=policy, reward_funcs=[recorded], args=args,
                            train_dataset=datasets.Dataset.from_dict(
                                {"prompt": PROMPTS[:4] * 2}))
  trainer.train()
  assert trainer.state.global_step == 2 and len(seen) >= 2
  prompts, completions, out = seen[0]
  assert len(out) == len(completions) == len(prompts)
  want = f.service.score([(p, [c]) for p, c in zip(prompts, completions)])
  np.testing.assert_allclose(out, [w.rewards[0] for w in want], atol=1e-5)
  logged = [h for h in trainer.state.log_history if "reward" in h or "rewards/westofn_reward/mean"
            in h]
  assert logged


def test_mixed_precision_scoring_keeps_the_parameters_and_stays_close(runs):
  exact = reward_fn(runs[0])
  mixed = reward_fn(runs[0], matmul_dtype="bfloat16")
  member = mixed.service.members[0]
  cfg = member.model.backbone.cfg
  assert cfg.matmul_dtype == cfg.attention_dtype == "bfloat16"
  from flax import nnx
  import jax
  import ml_dtypes
  dense_weights = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"}
  for (path, a), (_, b) in zip(
      jax.tree.leaves_with_path(nnx.state(exact.service.members[0].model, nnx.Param)),
      jax.tree.leaves_with_path(nnx.state(member.model, nnx.Param))):
    # the dense weights are stored rounded to bf16 (as each matmul would round them), the
    # rest as trained; the restored float32 model is left as it was
    dense = any(getattr(k, "key", None) in dense_weights for k in path)
    assert np.asarray(a).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(a).astype(ml_dtypes.bfloat16) if dense else a, b)
  prompts, completions = [PROMPTS[0]] * 4 + [PROMPTS[3]] * 2, ["aaa", "abab", "e", "aaaaaa",
                                                               "cc", "ccccc"]
  want, got = exact(prompts, completions), mixed(prompts, completions)
  assert want != got                                   # bf16 operands change the numbers
  np.testing.assert_allclose(got, want, atol=0.05 * (np.ptp(want) + 1e-3) + 0.02)


class _CountingService:
  """Scores nothing: records the items of each call and answers each item with itself."""

  def __init__(self):
    self.calls = []

  def score(self, items):
    self.calls.append(list(items))
    time.sleep(0.02)
    return list(items)


@pytest.mark.parametrize("max_wait_s", [0.0, 0.5])
def test_batcher_waits_for_the_clients_it_answered_but_never_for_a_lone_one(max_wait_s):
  from westofn.serving.batcher import Batcher

  async def scenario():
    service = _CountingService()
    batcher = Batcher(service, max_batch=64, max_wait_s=max_wait_s)
    batcher.start()
    try:
      assert await batcher.submit([("alone", ["r"])]) == [("alone", ["r"])]
      t0 = time.perf_counter()
      await batcher.submit([("still alone", ["r"])])   # after a lone request: no wait
      lone_s = time.perf_counter() - t0
      # two at once: one batch, and both clients are expected back
      assert await asyncio.gather(batcher.submit([("a", ["r"])]),
                                  batcher.submit([("b", ["r", "s"])])) == [
          [("a", ["r"])], [("b", ["r", "s"])]]

      async def late(item, delay):
        await asyncio.sleep(delay)
        return await batcher.submit([item])
      # the second client back 50 ms after the first joins its batch if the batcher waits
      got = await asyncio.gather(late(("c", ["r"]), 0.0), late(("d", ["r"]), 0.05))
      assert got == [[("c", ["r"])], [("d", ["r"])]]
    finally:
      await batcher.stop()
    return service.calls, lone_s

  calls, lone_s = asyncio.run(scenario())
  assert [len(c) for c in calls[:3]] == [1, 1, 2]
  assert lone_s < 0.02 + 0.3   # the scoring call's own 20 ms; no 0.5 s wait
  assert [len(c) for c in calls[3:]] == ([2] if max_wait_s else [1, 1])


@pytest.mark.parametrize("knob, value, message", [
    ("max_batch", 0, "--max_batch must be >= 1, got 0"),
    ("max_wait_ms", -1.0, r"--max_wait_ms must be in \[0, 1000\], got -1.0"),
    ("max_wait_ms", 5000.0, r"--max_wait_ms must be in \[0, 1000\], got 5000.0")])
def test_serve_refuses_batching_settings_out_of_range_before_restoring(knob, value, message):
  from westofn.serve import serve
  from westofn.errors import ConfigError
  with pytest.raises(ConfigError, match=message):
    serve(model_dir="/nonexistent/run", **{knob: value})
