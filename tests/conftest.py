import os
import sys
import tempfile

import pytest

# One persistent XLA compilation cache for the session's workers and the subprocesses their
# tests start (they inherit the environment): many tests compile the same steps. Set before
# any test module imports JAX, which reads these at import.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"westofn-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 * 1024 ** 3))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
HH_DIR = os.path.join(REPO, "..", "shared", "data", "hh-rlhf")


@pytest.fixture(scope="session")
def hh_dir():
  if not os.path.isdir(HH_DIR):
    pytest.skip(f"HH-RLHF data not found at {HH_DIR}")
  return HH_DIR


# The files whose tests take longest (seconds of one test worker on a 2-core host, from
# `pytest --durations`: about 500, 320, 240, 115, 110, 105). pytest.ini turns off xdist's own
# order (most tests first), which started the single 105-second test of
# test_kill_and_resume.py last, with the other worker idle; these go first, longest first
# (longest-processing-time order), the rest by number of tests as xdist would.
LONG_FILES = ("test_distributed.py", "test_train.py", "test_checkpoints.py",
              "test_policy_improvement.py", "test_smollm2.py", "test_kill_and_resume.py")


def pytest_collection_modifyitems(config, items):
  per_file = {}
  for item in items:
    per_file[item.path.name] = per_file.get(item.path.name, 0) + 1
  rank = {name: i for i, name in enumerate(LONG_FILES)}
  items.sort(key=lambda item: (rank.get(item.path.name, len(LONG_FILES)),
                               -per_file[item.path.name], str(item.path)))
