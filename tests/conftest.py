"""Test setup: quiet TensorFlow, make the repo root importable (configs/, experiments/)."""
import os
import sys
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
