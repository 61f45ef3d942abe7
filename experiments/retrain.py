"""The retrain job of a served LM (genai/feedback/retrain.py), training with experiments.lm.

  python -m experiments.retrain init --root R --workdir W --heldout heldout.txt
  python -m experiments.retrain run --root R [--watch DIR] [--feedback_db URL]
  python -m experiments.retrain rollback --root R
  python -m experiments.retrain status --root R

`python -m experiments.retrain --help` (and `run --help`) lists every flag.
"""
from __future__ import annotations

import sys

from experiments import lm
from genai.feedback import retrain


def main(argv: list[str] | None = None) -> int:
  return retrain.main(argv, lm.train_and_evaluate)


if __name__ == '__main__':
  sys.exit(main())
