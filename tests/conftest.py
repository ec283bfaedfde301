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
