"""Hot reload: watch a workdir and serve its newest checkpoint once it is written (or a
model registry, and serve its current version once it is promoted or rolled back).

A thread polls `version_fn(source)` (by default the newest checkpoint step) every
`interval` seconds; when it changes, the new weights are loaded beside the old ones and
swapped in.
Text requests in flight finish on the weights they started with (see `Engine.swap_params`);
a load that fails leaves the current model serving and is retried at the next change.
"""
from __future__ import annotations

import logging
import threading

from genai.serve import models


def registry_fns(root: str):
  """(version_fn, load_fn) that follow a model registry's current version
  (genai/feedback/registry.py) instead of a workdir's newest checkpoint."""
  from genai.feedback.registry import Registry  # pylint: disable=import-outside-toplevel
  reg = Registry(root)

  def load_fn(_, name):
    cur = reg.current()
    return models.load(cur['workdir'], name=name, version=cur['version'])
  return (lambda _: reg.served_version()), load_fn


class Reloader:

  def __init__(self, source: str, served, interval: float = 10.0,
               version_fn=models.version_of, load_fn=None):
    self.source, self.served, self.interval = source, served, interval
    self.version_fn = version_fn
    self.load_fn = load_fn or (lambda source, name: models.load(source, name=name))
    self.last_error: BaseException | None = None
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name='genai-reload', daemon=True)

  def start(self) -> 'Reloader':
    self._thread.start()
    return self

  def stop(self) -> None:
    self._stop.set()
    self._thread.join(timeout=30)

  def check_once(self) -> bool:
    """Loads and swaps in the source's current version if it is new; True if it did."""
    version = self.version_fn(self.source)
    if version == self.served.model.version:
      return False
    new = self.load_fn(self.source, self.served.model.name)
    self.served.swap(new)
    logging.info('serving %s %s', new.name, new.version)
    return True

  def _run(self) -> None:
    while not self._stop.wait(self.interval):
      try:
        self.check_once()
        self.last_error = None
      except Exception as e:  # pylint: disable=broad-except
        self.last_error = e
        logging.warning('hot reload of %s failed (still serving %s): %r', self.source,
                        self.served.model.version, e)
