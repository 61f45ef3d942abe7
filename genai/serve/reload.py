"""Hot reload: watch a workdir and serve its newest checkpoint once it is written.

A thread polls `models.version_of(source)` (the newest checkpoint step) every `interval`
seconds; when it changes, the new weights are loaded beside the old ones and swapped in.
Text requests in flight finish on the weights they started with (see `Engine.swap_params`);
a load that fails leaves the current model serving and is retried at the next change.
"""
from __future__ import annotations

import logging
import threading

from genai.serve import models


class Reloader:

  def __init__(self, source: str, served, interval: float = 10.0,
               version_fn=models.version_of):
    self.source, self.served, self.interval = source, served, interval
    self.version_fn = version_fn
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
    new = models.load(self.source, name=self.served.model.name)
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
