"""Who may call the server and how much: API keys, per-key rate limits, body size.

Errors are raised as `ApiError`, which the app turns into a JSON body in the OpenAI shape
({"error": {"message", "type", "param", "code"}}) with the status code it carries.
"""
from __future__ import annotations

import dataclasses
import hmac
import threading
import time


class ApiError(Exception):
  def __init__(self, status: int, message: str, type_: str = 'invalid_request_error',
               param: str | None = None, headers: dict[str, str] | None = None):
    super().__init__(message)
    self.status, self.message, self.type, self.param = status, message, type_, param
    self.headers = headers or {}


@dataclasses.dataclass
class Limits:
  api_keys: frozenset[str] = frozenset()  # empty: no authentication
  max_body_bytes: int = 1 << 20
  max_prompt_tokens: int = 0  # 0: the model's context
  max_new_tokens: int = 512
  requests_per_minute: int = 0  # per key (per client address without keys); 0: no limit


def bearer_key(authorization: str | None, x_api_key: str | None) -> str | None:
  if x_api_key:
    return x_api_key
  if authorization and authorization.lower().startswith('bearer '):
    return authorization[7:].strip()
  return None


def check_key(limits: Limits, key: str | None) -> None:
  if not limits.api_keys:
    return
  if key is None:
    raise ApiError(401, 'Missing API key: send "Authorization: Bearer <key>".',
                   'authentication_error', headers={'WWW-Authenticate': 'Bearer'})
  # Compare against every key in constant time (no early exit on a match's prefix).
  if not any(hmac.compare_digest(key.encode(), k.encode()) for k in limits.api_keys):
    raise ApiError(401, 'Invalid API key.', 'authentication_error',
                   headers={'WWW-Authenticate': 'Bearer'})


class RateLimiter:
  """A token bucket per caller: `rate` requests per minute, bursts up to `rate`."""

  def __init__(self, per_minute: int):
    self.per_minute = per_minute
    self._buckets: dict[str, tuple[float, float]] = {}
    self._lock = threading.Lock()

  def check(self, caller: str) -> None:
    if self.per_minute <= 0:
      return
    now = time.monotonic()
    rate = self.per_minute / 60.0
    with self._lock:
      tokens, last = self._buckets.get(caller, (float(self.per_minute), now))
      tokens = min(float(self.per_minute), tokens + (now - last) * rate)
      if tokens < 1.0:
        wait = (1.0 - tokens) / rate
        self._buckets[caller] = (tokens, now)
        raise ApiError(429, f'Rate limit of {self.per_minute} requests per minute reached; '
                       f'retry in {wait:.1f} s.', 'rate_limit_error',
                       headers={'Retry-After': str(max(1, round(wait)))})
      self._buckets[caller] = (tokens - 1.0, now)


class BodyLimit:
  """ASGI middleware: a request body over `max_bytes` gets 413 before any handler parses it
  (by its Content-Length, or counted as a chunked body streams in)."""

  def __init__(self, app, max_bytes: int, error_response):
    self.app, self.max_bytes, self.error_response = app, max_bytes, error_response

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    too_big = ApiError(413, f'Request body over {self.max_bytes} bytes; send less '
                       '(the server sets --max_body_bytes).')
    headers = dict(scope.get('headers') or [])
    length = headers.get(b'content-length')
    if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
      return await self.error_response(too_big)(scope, receive, send)
    if length is not None:
      return await self.app(scope, receive, send)
    # No Content-Length (a chunked body): read it here, up to the limit, then replay it.
    chunks, seen = [], 0
    while True:
      message = await receive()
      if message['type'] != 'http.request':
        return  # the client went away
      chunks.append(message.get('body', b''))
      seen += len(chunks[-1])
      if seen > self.max_bytes:
        return await self.error_response(too_big)(scope, receive, send)
      if not message.get('more_body', False):
        break
    replayed = False

    async def replay():
      nonlocal replayed
      if replayed:
        return await receive()
      replayed = True
      return {'type': 'http.request', 'body': b''.join(chunks), 'more_body': False}

    return await self.app(scope, replay, send)
