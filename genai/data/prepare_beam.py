"""Preparation's work units as an Apache Beam pipeline (DirectRunner, Dataflow, Flink, Spark).

The same units and the same per-unit function as the local process pool: Beam spreads the
units over its workers (after a Reshuffle, so one slow input does not serialise the rest),
each unit writes its own shards atomically (a retried unit rewrites identical files), and
the small per-unit results come back through text files under the output folder, from
which the driver writes each split's manifest last. Apache Beam is optional:
`pip install apache-beam==2.77.0` (it needs protobuf < 7 and pillow < 13; see
docs/data_at_scale.md). Remote runners need the output folder on storage every worker
reaches and genai installed on the workers (e.g. Dataflow's --setup_file).
"""
from __future__ import annotations

import glob
import json
import os
import uuid
from typing import Any, Callable, Sequence

_MISSING = ('--runner needs Apache Beam, which is not installed: pip install '
            '"apache-beam==2.77.0" (with protobuf 6.33.x and pillow 12.x, see '
            'docs/data_at_scale.md), or drop --runner to prepare with local processes.')


def _import_beam():
  try:
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.options import pipeline_options  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(_MISSING) from e
  return beam, pipeline_options


def _apply(indexed: tuple[int, Any], fn: Callable[[Any], Any]) -> str:
  index, item = indexed
  return json.dumps([index, fn(item)])


def map_units(fn: Callable[[Any], Any], items: Sequence[Any], *, runner: str,
              beam_args: Sequence[str] = (), tmp_dir: str = '.') -> list[Any]:
  """[fn(item) for item in items] (JSON-serialisable results), computed by a Beam pipeline
  on `runner`; `beam_args` are further pipeline options ('--direct_num_workers=2')."""
  beam, pipeline_options = _import_beam()
  options = pipeline_options.PipelineOptions(list(beam_args), runner=runner)
  prefix = os.path.join(os.path.abspath(tmp_dir), f'.beam-results-{uuid.uuid4().hex}')
  try:
    with beam.Pipeline(options=options) as p:
      _ = (p
           | 'Units' >> beam.Create(list(enumerate(items)))
           | 'Spread' >> beam.Reshuffle()
           | 'Work' >> beam.Map(_apply, fn)
           | 'Results' >> beam.io.WriteToText(prefix, file_name_suffix='.jsonl'))
    rows = []
    for path in sorted(glob.glob(prefix + '*.jsonl')):
      with open(path, encoding='utf-8') as f:
        rows.extend(json.loads(line) for line in f if line.strip())
  finally:
    for path in glob.glob(prefix + '*'):
      os.remove(path)
  results = dict(rows)  # a unit retried by the runner gives the same result twice
  if sorted(results) != list(range(len(items))):
    raise RuntimeError(f'the Beam pipeline returned results for {len(results)} of '
                       f'{len(items)} units; run it again.')
  return [results[i] for i in range(len(items))]
