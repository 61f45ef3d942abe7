"""The FastAPI app: OpenAI-compatible text routes or an image route, health, models, metrics.

`make_app(served, ...)` serves one loaded model (genai/serve/models.py). Text requests go
to the continuous-batching `Engine`; image requests run one at a time in a worker thread.
`/healthz` is liveness (the process and its decode engine), `/readyz` readiness (also the
feedback database, when there is one): a load balancer sends traffic to the replicas whose
/readyz answers 200. With a `feedback_store`, a generation is answered only once it is
recorded (so every id a client gets can be rated): while the database is unavailable, text
and feedback routes answer 503 with one line naming the cause (`StoreUnavailable`), and
work again when it is back.
Hooks for the responsible-AI and feedback parts (or pass `feedback_store=`):
  output_filter(text) -> FilterResult   applied to every generated text before it is sent
  on_generation(record: dict)           called once per served generation (id, version,
                                        prompt, output, parameters, time)
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import secrets
import threading
import time
import uuid
from typing import Any, Callable

import fastapi
from fastapi import responses
from fastapi.exceptions import RequestValidationError
import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from genai.serve import limits as limits_lib
from genai.serve import metrics as metrics_lib
from genai.serve import schemas
from genai.serve.engine import Engine, QueueFull, Request
from genai.serve.limits import ApiError
from genai.serve.models import ImageModel, TextModel


@dataclasses.dataclass
class FilterResult:
  """What an output filter decided: the text to send (maybe redacted), and whether to
  withhold it (finish_reason 'content_filter')."""
  text: str
  blocked: bool = False
  flags: tuple[str, ...] = ()


def _error_response(err: ApiError) -> responses.JSONResponse:
  body = {'error': {'message': err.message, 'type': err.type, 'param': err.param,
                    'code': str(err.status)}}
  return responses.JSONResponse(body, status_code=err.status, headers=err.headers)


_ERRORS = {code: {'model': schemas.ErrorResponse} for code in (400, 401, 404, 413, 422, 429, 503, 504)}


def _unavailable(err: Exception) -> ApiError:
  """The 503 of a feedback database that is unavailable (genai.feedback.store)."""
  return ApiError(503, str(err), 'server_error', headers={'Retry-After': '5'})


def _validation_message(err: RequestValidationError, content_type: str | None) -> ApiError:
  """A 422 naming the first problem: the field and pydantic's message (a validator's own
  message without its 'Value error, ' prefix), or what is wrong with the JSON itself."""
  first = err.errors()[0] if err.errors() else {}
  where = '.'.join(str(p) for p in first.get('loc', ()) if p != 'body') or None
  kind = first.get('type', '')
  if kind == 'json_invalid':
    pos = next((p for p in first.get('loc', ())[1:] if isinstance(p, int)), None)
    at = f' at character {pos}' if pos is not None else ''
    return ApiError(422, f"The body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')}"
                    f'{at}).')
  if where is None and isinstance(first.get('input'), (bytes, str)) and (
      'json' not in (content_type or '')):
    return ApiError(422, f'The body was sent as {content_type or "no content type"}, not JSON; '
                    'send a JSON object with Content-Type: application/json.')
  msg = str(first.get('msg', 'invalid request')).removeprefix('Value error, ')
  return ApiError(422, f"{where or 'body'}: {msg}", param=where)


def _parse_failure(cause: BaseException | None) -> str:
  """What stopped the JSON parser, for the 400 of a body it could not read."""
  if isinstance(cause, RecursionError):
    return ('The JSON body is nested too deeply for the parser (about 1,000 levels of arrays '
            'and objects at most); send a flatter body.')
  if isinstance(cause, UnicodeDecodeError):
    return (f'The body is not UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset '
            f'{cause.start} cannot be decoded); send UTF-8 JSON.')
  if cause is not None:
    return f'The body could not be parsed ({type(cause).__name__}: {cause}); send UTF-8 JSON.'
  return 'The body could not be parsed; send UTF-8 JSON.'


class _Served:
  """The app's mutable state: the model (swapped by hot reload) and its engine."""

  def __init__(self, model: TextModel | ImageModel, engine: Engine | None):
    self.model, self.engine = model, engine
    self.image_lock = threading.Lock()

  @property
  def version(self) -> str:
    return self.engine.version if self.engine is not None else self.model.version

  def swap(self, new: TextModel | ImageModel) -> None:
    if self.engine is not None:
      self.engine.swap_params(new.params, new.version)
      self.model = dataclasses.replace(self.model, version=new.version)
    else:
      with self.image_lock:
        self.model = new


def make_app(model: TextModel | ImageModel, *, limits: limits_lib.Limits | None = None,
             engine: Engine | None = None, output_filter: Callable[[str], FilterResult] | None = None,
             on_generation: Callable[[dict[str, Any]], None] | None = None,
             feedback_store: Any = None,
             request_timeout_s: float = 300.0) -> fastapi.FastAPI:
  """The app for `model`; a text model needs its started `engine`. With a
  `feedback_store` (genai.feedback.store.FeedbackStore) every generation is recorded in it,
  outputs the filter flagged are queued for human review, and the feedback routes and the
  web page (genai/serve/feedback_routes.py) are added."""
  limits = limits or limits_lib.Limits()
  is_text = isinstance(model, TextModel)
  if is_text and engine is None:
    raise ValueError('a text model is served through an Engine; pass engine=.')
  served = _Served(model, engine)
  rate = limits_lib.RateLimiter(limits.requests_per_minute)
  metrics = metrics_lib.ServerMetrics(engine, model.name, lambda: served.version)
  # With API keys, the schema and its two viewers need a key like every other route (they
  # are added below, behind `authorize`): only /healthz and /readyz answer without one.
  keyed = bool(limits.api_keys)
  app = fastapi.FastAPI(
      title='genai', version='0.1.0',
      description=f'Serving {model.name} ({"text" if is_text else model.family}). '
      'OpenAI-compatible routes; every error body is {"error": {...}}.'
      + (' Every route but /healthz and /readyz (this schema and /docs, /redoc included) '
         'needs an API key: "Authorization: Bearer <key>" or "X-API-Key: <key>".'
         if keyed else ''),
      docs_url=None if keyed else '/docs', redoc_url=None if keyed else '/redoc',
      openapi_url=None if keyed else '/openapi.json')
  app.state.served = served
  app.state.metrics = metrics

  @app.exception_handler(ApiError)
  async def _api_error(request, err: ApiError):
    return _error_response(err)

  @app.exception_handler(RequestValidationError)
  async def _validation_error(request, err: RequestValidationError):
    return _error_response(_validation_message(err, request.headers.get('content-type')))

  @app.exception_handler(StarletteHTTPException)
  async def _http_error(request, err: StarletteHTTPException):
    message = str(err.detail)
    if err.status_code == 400 and 'parsing the body' in message:
      message = _parse_failure(err.__cause__)
    return _error_response(ApiError(err.status_code, message, 'invalid_request_error',
                                    headers=dict(err.headers or {})))

  @app.middleware('http')
  async def _count(request: fastapi.Request, call_next):
    t0 = time.perf_counter()
    response = await call_next(request)
    path = getattr(request.scope.get('route'), 'path', 'unmatched')
    metrics.requests.labels(path, str(response.status_code)).inc()
    body = response.body_iterator

    async def timed_body():  # a stream's latency runs to its last event
      try:
        async for chunk in body:
          yield chunk
      finally:
        metrics.latency.labels(path).observe(time.perf_counter() - t0)

    response.body_iterator = timed_body()
    return response

  app.add_middleware(limits_lib.BodyLimit, max_bytes=limits.max_body_bytes,
                     error_response=_error_response)

  def authorize(request: fastapi.Request,
                authorization: str | None = fastapi.Header(None),
                x_api_key: str | None = fastapi.Header(None)) -> str:
    key = limits_lib.bearer_key(authorization, x_api_key)
    limits_lib.check_key(limits, key)
    caller = key if limits.api_keys else (request.client.host if request.client else '-')
    rate.check(caller)
    return caller

  if keyed:
    from fastapi import openapi as fastapi_openapi  # pylint: disable=import-outside-toplevel

    @app.get('/openapi.json', include_in_schema=False)
    def openapi_schema(_: str = fastapi.Depends(authorize)):
      return responses.JSONResponse(app.openapi())

    @app.get('/docs', include_in_schema=False)
    def swagger_docs(_: str = fastapi.Depends(authorize)):
      return fastapi_openapi.docs.get_swagger_ui_html(openapi_url='/openapi.json',
                                                      title='genai - Swagger UI')

    @app.get('/redoc', include_in_schema=False)
    def redoc_docs(_: str = fastapi.Depends(authorize)):
      return fastapi_openapi.docs.get_redoc_html(openapi_url='/openapi.json',
                                                 title='genai - ReDoc')

  app.state.store_errors = ()
  if feedback_store is not None:
    from genai.feedback.store import StoreUnavailable  # pylint: disable=import-outside-toplevel
    app.state.store_errors = (StoreUnavailable,)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request, err: StoreUnavailable):
      return _error_response(_unavailable(err))

  @app.get('/healthz', tags=['server'])
  def healthz() -> dict[str, Any]:
    """Liveness: the process serves and its decode engine runs (not the database)."""
    engine_ok = engine is None or engine.error is None
    if not engine_ok:
      raise ApiError(503, f'the decode engine stopped: {engine.error!r}', 'server_error')
    return {'status': 'ok', 'model': model.name, 'version': served.version}

  @app.get('/readyz', tags=['server'], responses={503: {'model': schemas.ErrorResponse}})
  def readyz() -> dict[str, Any]:
    """Readiness: live, and the feedback database (when there is one) answers now."""
    out = healthz()
    if feedback_store is not None:
      feedback_store.ping()  # StoreUnavailable: the 503 above
    return {**out, 'status': 'ready', 'feedback': None if feedback_store is None else 'ok'}

  @app.get('/v1/models', response_model=schemas.ModelList, responses=_ERRORS, tags=['server'])
  def list_models(_: str = fastapi.Depends(authorize)):
    kind = 'text' if is_text else served.model.family
    return schemas.ModelList(data=[schemas.ModelCard(id=model.name, kind=kind,
                                                     version=served.version)])

  @app.get('/metrics', responses={200: {'content': {'text/plain': {}}}, **_ERRORS},
           tags=['server'])
  def prometheus(_: str = fastapi.Depends(authorize)):
    return responses.Response(metrics.render(), media_type='text/plain; version=0.0.4')

  if feedback_store is not None:
    on_generation = _recording(feedback_store, on_generation)
    from genai.serve import feedback_routes  # pylint: disable=import-outside-toplevel
    feedback_routes.add_feedback_routes(app, feedback_store, authorize)
  if is_text:
    _text_routes(app, served, limits, authorize, output_filter, on_generation,
                 request_timeout_s)
  else:
    _image_routes(app, served, authorize, metrics)
  return app


def _recording(store, then=None):
  """An on_generation hook: store the generation, queue each flagged choice for review."""
  def on_generation(record):
    store.record_generation(record)
    for text, flags in zip(record['outputs'], record.get('choice_flags', [])):
      if flags:
        store.add_review_item(record['id'], text, flags)
    if then is not None:
      then(record)
  return on_generation


# =========================== Text =======================================================

def _render_chat(tokenizer, messages: list[schemas.ChatMessage]) -> str:
  """The model's own chat template, or 'role: content' lines ending in 'assistant:'."""
  rows = [m.model_dump() for m in messages]
  if getattr(tokenizer, 'chat_template', None):
    return tokenizer.apply_chat_template(rows, add_generation_prompt=True)
  return ''.join(f"{m['role']}: {m['content']}\n" for m in rows) + 'assistant:'


def _text_routes(app, served: _Served, limits, authorize, output_filter, on_generation,
                 timeout_s: float) -> None:
  engine = served.engine
  max_prompt = limits.max_prompt_tokens or engine.max_len - 1

  def check_model(name):
    if name is not None and name != served.model.name:
      raise ApiError(404, f'model {name!r} is not served here; GET /v1/models lists '
                     f'{served.model.name!r}.', param='model', type_='not_found_error')

  def encode(text: str, param: str) -> np.ndarray:
    try:
      ids = np.asarray(served.model.tokenizer.encode(text), np.int32)
    except ValueError as e:  # e.g. characters outside a char model's vocabulary
      raise ApiError(422, f'{param} cannot be tokenised: {e}', param=param) from e
    if len(ids) == 0:
      raise ApiError(422, f'{param} is empty after tokenisation.', param=param)
    if len(ids) > max_prompt:
      raise ApiError(422, f'{param} is {len(ids)} tokens; this server takes at most '
                     f'{max_prompt}.', param=param)
    return ids

  def start(body: schemas._Sampling, prompts: list[str], loop, listed: bool = False
            ) -> tuple[list, list, list[np.ndarray]]:
    """Submits n requests per prompt (choice j * n + i: prompt j, sample i); returns
    (requests, their asyncio queues, the prompts' ids). Every prompt is checked before
    any is submitted."""
    check_model(body.model)
    if body.max_tokens > limits.max_new_tokens:
      raise ApiError(422, f'max_tokens={body.max_tokens} is over this server\'s limit of '
                     f'{limits.max_new_tokens}.', param='max_tokens')
    if len(prompts) * body.n > schemas.MAX_CHOICES:
      raise ApiError(422, f'{len(prompts)} prompts x n={body.n} is {len(prompts) * body.n} '
                     f'choices; a request may ask for at most {schemas.MAX_CHOICES}.',
                     param='n')
    all_ids = []
    for j, text in enumerate(prompts):
      param = f'prompt[{j}]' if listed else 'prompt'
      ids = encode(text, param)
      if len(ids) + body.max_tokens > engine.max_len:
        raise ApiError(422, f'{param} ({len(ids)} tokens) + max_tokens ({body.max_tokens}) '
                       f'exceeds the model context of {engine.max_len} tokens; shorten the '
                       'prompt or ask for fewer tokens.', param='max_tokens')
      all_ids.append(ids)
    seed = (body.seed if body.seed is not None
            else secrets.randbelow(schemas.MAX_SEED - schemas.MAX_CHOICES))
    reqs, queues = [], []
    rid = f'cmpl-{uuid.uuid4().hex}'
    for j, ids in enumerate(all_ids):
      for i in range(body.n):
        q: asyncio.Queue = asyncio.Queue()
        reqs.append(Request(ids, body.max_tokens, _pusher(loop, q),
                            temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                            seed=seed + j * body.n + i, stop=body.stop_list()))
        reqs[-1].rid = rid
        queues.append(q)
    try:
      for r in reqs:
        engine.submit(r)
    except QueueFull as e:
      for r in reqs:
        engine.cancel(r)
      raise ApiError(503, str(e), 'overloaded_error', headers={'Retry-After': '1'}) from e
    return reqs, queues, all_ids

  def filtered(text: str) -> tuple[str, str | None, tuple[str, ...]]:
    if output_filter is None:
      return text, None, ()
    res = output_filter(text)
    return ('', 'content_filter', res.flags) if res.blocked else (res.text, None, res.flags)

  async def record(kind, body, prompts, texts, finishes, reqs, choice_flags):
    """Hands the generation to `on_generation` in a worker thread (a durable store's
    commit waits for the disk; the event loop must not): one record per prompt, the
    response id for a single prompt, '<id>:<j>' for prompt j of a list."""
    if on_generation is None:
      return
    params = body.model_dump(exclude={'messages', 'prompt', 'stream', 'model', 'user'})
    n = body.n
    for j, prompt in enumerate(prompts):
      rows = slice(j * n, (j + 1) * n)
      params = {**params, 'seed': reqs[j * n].seed}
      flags = choice_flags[rows]
      await run_in_threadpool(on_generation, {
          'id': rid_of(reqs) if len(prompts) == 1 else f'{rid_of(reqs)}:{j}', 'kind': kind,
          'model': served.model.name, 'version': reqs[j * n].version, 'prompt': prompt,
          'outputs': texts[rows], 'finish_reasons': finishes[rows], 'params': params,
          'user': body.user, 'flags': sorted({f for fl in flags for f in fl}),
          'choice_flags': [sorted(set(fl)) for fl in flags], 'time': time.time()})

  def rid_of(reqs):
    return reqs[0].rid

  async def collect(reqs, queues) -> tuple[list[str], list[str]]:
    async def one(r, q):
      finish = None
      while finish is None:
        _, _, finish = await q.get()
      return finish
    try:
      finishes = await asyncio.wait_for(asyncio.gather(*(one(r, q) for r, q in zip(reqs, queues))),
                                        timeout=timeout_s)
    except asyncio.TimeoutError as e:
      raise ApiError(504, f'generation took over {timeout_s:.0f} s; ask for fewer tokens.',
                     'timeout_error') from e
    finally:
      for r in reqs:
        engine.cancel(r)  # no-op for finished requests; frees slots of abandoned ones
    if 'error' in finishes:
      raise ApiError(503, f'the decode engine stopped: {engine.error!r}', 'server_error')
    return [r.text for r in reqs], list(finishes)

  def usage(all_ids, reqs) -> schemas.Usage:
    done = sum(len(r.tokens) for r in reqs)
    prompt = sum(len(ids) for ids in all_ids)
    return schemas.Usage(prompt_tokens=prompt, completion_tokens=done,
                         total_tokens=prompt + done)

  async def stream(kind, body, prompts, reqs, queues):
    """SSE events: one chunk per engine tick per choice, then data: [DONE]."""
    obj = 'text_completion' if kind == 'completion' else 'chat.completion.chunk'
    rid, created = rid_of(reqs), int(time.time())
    sent = ['' for _ in reqs]
    finishes: list[str | None] = [None] * len(reqs)
    flags: list[set[str]] = [set() for _ in reqs]

    def event(i, delta, finish):
      if kind == 'completion':
        choice = {'index': i, 'text': delta, 'finish_reason': finish, 'logprobs': None}
      else:
        choice = {'index': i, 'delta': {'content': delta} if delta else {},
                  'finish_reason': finish}
      payload = {'id': rid, 'object': obj, 'created': created, 'model': served.model.name,
                 'system_fingerprint': reqs[0].version, 'choices': [choice]}
      return f'data: {_json(payload)}\n\n'

    merged: asyncio.Queue = asyncio.Queue()
    raw = ['' for _ in reqs]  # text received so far per choice

    async def relay(i, q):
      while True:
        item = await q.get()
        await merged.put((i,) + item)
        if item[2] is not None:
          return

    tasks = [asyncio.ensure_future(relay(i, q)) for i, q in enumerate(queues)]
    try:
      if kind == 'chat':
        for i in range(len(reqs)):
          payload = {'id': rid, 'object': obj, 'created': created, 'model': served.model.name,
                     'system_fingerprint': reqs[0].version,
                     'choices': [{'index': i, 'delta': {'role': 'assistant', 'content': ''},
                                  'finish_reason': None}]}
          yield f'data: {_json(payload)}\n\n'
      deadline = time.monotonic() + timeout_s
      while any(f is None for f in finishes):
        try:
          i, delta, _, finish = await asyncio.wait_for(
              merged.get(), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
          yield f'data: {_json({"error": {"message": "generation timed out", "type": "timeout_error"}})}\n\n'
          break
        if finishes[i] is not None:
          continue
        raw[i] += delta
        text, blocked, f = filtered(raw[i])
        flags[i].update(f)
        if blocked:
          finish = 'content_filter'
          engine.cancel(reqs[i])
        delta = text[len(sent[i]):] if text.startswith(sent[i]) else ''
        if delta or finish:
          sent[i] = text if not blocked else sent[i]
          yield event(i, delta, finish)
        finishes[i] = finish
      try:  # recorded before [DONE]: a client that saw [DONE] may rate the id
        await record(kind, body, prompts, sent, finishes, reqs, flags)
      except app.state.store_errors as e:  # the feedback database is down
        err = _unavailable(e)
        error = {'message': err.message, 'type': err.type, 'code': '503'}
        yield f'data: {_json({"error": error})}\n\n'
      yield 'data: [DONE]\n\n'
    finally:  # the client went away, or we finished: free every slot
      for t in tasks:
        t.cancel()
      for r in reqs:
        engine.cancel(r)

  async def run(kind: str, body, prompts: list[str], listed: bool = False):
    loop = asyncio.get_running_loop()
    reqs, queues, all_ids = start(body, prompts, loop, listed)
    if body.stream:
      return responses.StreamingResponse(stream(kind, body, prompts, reqs, queues),
                                         media_type='text/event-stream')
    texts, finishes = await collect(reqs, queues)
    out, flags = [], []
    for t, f in zip(texts, finishes):
      t, blocked, fl = filtered(t)
      flags.append(fl)
      out.append((t, blocked or f))
    await record(kind, body, prompts, [t for t, _ in out], [f for _, f in out], reqs, flags)
    base = dict(id=rid_of(reqs), created=int(time.time()), model=served.model.name,
                system_fingerprint=reqs[0].version, usage=usage(all_ids, reqs))
    if kind == 'completion':
      return schemas.CompletionResponse(choices=[
          schemas.CompletionChoice(index=i, text=t, finish_reason=f)
          for i, (t, f) in enumerate(out)], **base)
    return schemas.ChatResponse(choices=[
        schemas.ChatChoice(index=i, message=schemas.ChatMessage(role='assistant', content=t),
                           finish_reason=f) for i, (t, f) in enumerate(out)], **base)

  text_responses = {200: {'content': {'text/event-stream': {}}}, **_ERRORS}

  @app.post('/v1/completions', response_model=schemas.CompletionResponse,
            responses=text_responses, tags=['text'])
  async def completions(body: schemas.CompletionRequest, _: str = fastapi.Depends(authorize)):
    """`prompt`: a string, or a list of strings as in the OpenAI API: `n` choices per
    prompt, choice `index` = prompt index * n + sample index."""
    listed = isinstance(body.prompt, list)
    return await run('completion', body, body.prompt if listed else [body.prompt], listed)

  @app.post('/v1/chat/completions', response_model=schemas.ChatResponse,
            responses=text_responses, tags=['text'])
  async def chat_completions(body: schemas.ChatRequest, _: str = fastapi.Depends(authorize)):
    try:
      prompt = _render_chat(served.model.tokenizer, body.messages)
    except ValueError as e:
      raise ApiError(422, str(e), param='messages') from e
    return await run('chat', body, [prompt])


def _pusher(loop: asyncio.AbstractEventLoop, q: asyncio.Queue):
  """An engine-thread callback that hands each update to the request's asyncio queue."""
  def on_update(delta, tokens, finish):
    try:
      loop.call_soon_threadsafe(q.put_nowait, (delta, tokens, finish))
    except RuntimeError:  # the event loop closed (server shutting down)
      pass
  return on_update


def _json(payload) -> str:
  return json.dumps(payload, ensure_ascii=False)


# =========================== Images =====================================================

def _png_b64(image_HWC: np.ndarray) -> str:
  img = image_HWC[..., 0] if image_HWC.shape[-1] == 1 else image_HWC
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format='PNG')
  return base64.b64encode(buf.getvalue()).decode('ascii')


def _image_routes(app, served: _Served, authorize, metrics) -> None:

  @app.post('/v1/images/generations', response_model=schemas.ImageResponse,
            responses=_ERRORS, tags=['images'])
  async def images(body: schemas.ImageRequest, _: str = fastapi.Depends(authorize)):
    if body.model is not None and body.model != served.model.name:
      raise ApiError(404, f'model {body.model!r} is not served here; GET /v1/models lists '
                     f'{served.model.name!r}.', param='model', type_='not_found_error')
    seed = body.seed if body.seed is not None else secrets.randbelow(schemas.MAX_SEED)

    def work():
      with served.image_lock:
        m = served.model
        return m, m.generate(body.n, seed=seed, label=-1 if body.label is None else body.label,
                             guidance=body.guidance, steps=body.steps)
    try:
      m, images_NHWC = await run_in_threadpool(work)
    except ValueError as e:
      raise ApiError(422, str(e)) from e
    metrics.images.inc(len(images_NHWC))
    return schemas.ImageResponse(created=int(time.time()), model=m.name,
                                 system_fingerprint=m.version,
                                 data=[schemas.ImageData(b64_json=_png_b64(x))
                                       for x in images_NHWC])
