"""FID, KID and precision/recall of generated images, as a benchmark result file.

  python -m benchmarks.fid_score --result_name fid_gan \
      --samples runs/bench/gan_mnist/ema_samples.npz --max_samples 2000 \
      --ref mnist:test --ref_count 2000 --data_path ../shared/data/mnist

`python -m genai.evaluation.fid` with the same flags (see its --help), plus --results_dir and
--result_name: its JSON becomes the figures of benchmarks/results/<result_name>.json
(benchmarks/results.py).
"""
from __future__ import annotations

import json
import os
import tempfile

from absl import app
from absl import flags

from benchmarks import results as results_lib
from genai.evaluation import fid
from genai.evaluation import reference_stats


def headline(fig: dict) -> dict:
  key = lambda metric: reference_stats.metric_key(metric, 'fid_domain' in fig)
  label = 'FID' if 'fid' in fig else 'FID-domain'
  return {'quality': f'{label} {fig[key("fid")]:.2f}, KID x 100 {100 * fig[key("kid_mean")]:.2f} '
                     f'+- {100 * fig[key("kid_std")]:.2f}, precision {fig[key("precision")]:.2f}, '
                     f'recall {fig[key("recall")]:.2f} ({fig["n_samples"]:,} samples vs '
                     f'{fig["n_ref"]:,} {fig["ref"].split("@")[0]} {fig["ref"].rsplit(":", 1)[-1]} '
                     f'images, {fig["feature_extractor"]})'}


def main(argv):
  f = flags.FLAGS
  with tempfile.TemporaryDirectory() as tmp:
    if not f.output:
      f.output = os.path.join(tmp, 'fid.json')
    fid.main(argv)
    with open(f.output) as fh:
      figures = json.load(fh)
  results_lib.write(f.result_name, figures, headline=headline(figures),
                    results_dir=f.results_dir)


if __name__ == '__main__':
  fid.define_flags()
  results_lib.define_flags('fid_score')
  app.run(main)
