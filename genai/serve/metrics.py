"""Prometheus metrics of one server (its own registry, so several apps can live in a test)."""
from __future__ import annotations

import prometheus_client as prom


class ServerMetrics:

  def __init__(self, engine=None, model_name: str = '', version_fn=lambda: ''):
    self.registry = prom.CollectorRegistry()
    self.requests = prom.Counter('genai_requests', 'HTTP requests by route and status code.',
                                 ['route', 'code'], registry=self.registry)
    self.latency = prom.Histogram(
        'genai_request_latency_seconds', 'Time to the full response (streams: to the last '
        'event), by route.', ['route'], registry=self.registry,
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
    self.images = prom.Counter('genai_generated_images', 'Images generated.',
                               registry=self.registry)
    info = prom.Gauge('genai_model_info', 'The model served (value 1).', ['name', 'version'],
                      registry=self.registry)
    self._info, self._name, self._version_fn, self._last = info, model_name, version_fn, None
    if engine is not None:
      prom.Gauge('genai_queue_depth', 'Requests waiting for a decode slot.',
                 registry=self.registry).set_function(lambda: engine.queue_depth)
      prom.Gauge('genai_active_slots', 'Decode slots in use.',
                 registry=self.registry).set_function(lambda: engine.active)
      prom.Gauge('genai_generated_tokens', 'New tokens generated since start.',
                 registry=self.registry).set_function(lambda: engine.generated_tokens)
      prom.Gauge('genai_decode_tokens_per_second', 'Generated tokens per second of decode '
                 'time (the batched throughput while busy).', registry=self.registry
                 ).set_function(lambda: engine.generated_tokens / max(engine.tick_seconds, 1e-9))

  def render(self) -> bytes:
    version = self._version_fn()
    if version != self._last:
      self._info.clear()
      self._info.labels(self._name, version).set(1)
      self._last = version
    return prom.generate_latest(self.registry)
