import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
HH_DIR = os.path.join(REPO, "..", "shared", "data", "hh-rlhf")


@pytest.fixture(scope="session")
def hh_dir():
  if not os.path.isdir(HH_DIR):
    pytest.skip(f"HH-RLHF data not found at {HH_DIR}")
  return HH_DIR
