"""Feedback routes on the serving app, and the small web page that drives them.

`add_feedback_routes(app, store, authorize)` adds, next to the OpenAI-compatible routes
(every one but `GET /` behind the app's `authorize` dependency; errors are `ApiError`s,
so the app's handler answers {"error": {...}}):

  POST /v1/feedback             {generation_id, choice=0, rating: "up"|"down", comment?}
  POST /v1/feedback/edit        {generation_id, choice=0, text}
  POST /v1/feedback/preference  {generation_id, chosen: int, rejected: int}  (two choices of
                                one n>=2 generation) or {prompt, chosen: str, rejected: str}
  GET  /v1/review?status=pending|approved|rejected|all&limit=50
  POST /v1/review/{item_id}     {decision: "approved"|"rejected", reviewer?}
  GET  /v1/feedback/stats
  GET  /                        the web page (genai/serve/static/index.html)

An unknown generation or review item is a 404; a choice the generation does not have, or
any other value the store refuses, a 422. `store` is a `genai.feedback.store.FeedbackStore`
(its `record_generation` is the app's `on_generation` hook, so a completion's response
`id` is the `generation_id` to rate).
"""
from __future__ import annotations

import importlib.resources
from typing import Any, Callable, Literal

import fastapi
from fastapi import responses
import pydantic
from pydantic import Field

from genai.serve import schemas
from genai.serve.limits import ApiError

_ERRORS = {code: {'model': schemas.ErrorResponse} for code in (401, 404, 413, 422, 429)}
MAX_TEXT = 20_000


class _Body(pydantic.BaseModel):
  """Strict types, unknown fields refused: these bodies come from genai's own clients."""
  model_config = pydantic.ConfigDict(strict=True, extra='forbid')


class RatingRequest(_Body):
  generation_id: str = Field(..., min_length=1, max_length=128,
                             description='The `id` of a /v1/completions or chat response.')
  choice: int = Field(0, ge=0, description='Which choice of that generation (its index).')
  rating: Literal['up', 'down']
  comment: str | None = Field(None, max_length=2000)


class EditRequest(_Body):
  generation_id: str = Field(..., min_length=1, max_length=128)
  choice: int = Field(0, ge=0)
  text: str = Field(..., max_length=MAX_TEXT, description='The corrected output.')


class PreferenceRequest(_Body):
  """Either two choices of one generation (ints), or free texts with their prompt."""
  generation_id: str | None = Field(None, min_length=1, max_length=128)
  prompt: str | None = Field(None, max_length=MAX_TEXT)
  chosen: int | str = Field(..., description='A choice index, or a text with `prompt`.')
  rejected: int | str

  @pydantic.model_validator(mode='after')
  def _one_form(self):
    if self.generation_id is not None:
      if self.prompt is not None:
        raise ValueError('give generation_id (with choice indices) or prompt (with texts), '
                         'not both')
      if not (isinstance(self.chosen, int) and isinstance(self.rejected, int)):
        raise ValueError('with generation_id, chosen and rejected are choice indices')
      if self.chosen < 0 or self.rejected < 0 or self.chosen == self.rejected:
        raise ValueError('chosen and rejected must be two different choice indices >= 0')
    else:
      if self.prompt is None:
        raise ValueError('give generation_id (with choice indices) or prompt (with texts)')
      if not (isinstance(self.chosen, str) and isinstance(self.rejected, str)):
        raise ValueError('with prompt, chosen and rejected are texts')
      if len(self.chosen) > MAX_TEXT or len(self.rejected) > MAX_TEXT:
        raise ValueError(f'texts are at most {MAX_TEXT} characters')
    return self


class ReviewDecision(_Body):
  decision: Literal['approved', 'rejected']
  reviewer: str | None = Field(None, min_length=1, max_length=128)


def _page() -> str:
  return importlib.resources.files('genai.serve').joinpath('static/index.html').read_text(
      encoding='utf-8')


def add_feedback_routes(app: fastapi.FastAPI, store, authorize: Callable[..., Any]) -> None:
  """Adds the feedback, review and web-page routes to `app` (see the module docstring)."""
  page = _page()  # read once: a missing file fails at start-up, not on the first visit

  def generation(generation_id: str) -> dict[str, Any]:
    gen = store.get_generation(generation_id)
    if gen is None:
      raise ApiError(404, f'generation {generation_id!r} is not known here; rate the `id` '
                     'of a completion this server made.', 'not_found_error', 'generation_id')
    return gen

  def check_choice(gen: dict[str, Any], choice: int, param: str = 'choice') -> str:
    outputs = gen.get('outputs') or []
    if not 0 <= choice < len(outputs):
      raise ApiError(422, f'{param}={choice}, but that generation has {len(outputs)} '
                     f'choice(s) (0 to {len(outputs) - 1}).', param=param)
    return outputs[choice]

  def call(fn, *args, param=None, **kw):
    """A store call, its KeyError as 404 and ValueError as 422."""
    try:
      return fn(*args, **kw)
    except KeyError as e:
      message = e.args[0] if e.args and isinstance(e.args[0], str) else f'unknown id {e}'
      raise ApiError(404, message, 'not_found_error', param) from e
    except ValueError as e:
      raise ApiError(422, str(e), param=param) from e

  tags = ['feedback']

  @app.post('/v1/feedback', responses=_ERRORS, tags=tags)
  def rate(body: RatingRequest, _: str = fastapi.Depends(authorize)) -> dict[str, Any]:
    """Thumbs up or down on one choice of a served generation."""
    check_choice(generation(body.generation_id), body.choice)
    rid = call(store.add_rating, body.generation_id, body.choice,
               1 if body.rating == 'up' else -1, body.comment)
    return {'id': rid, 'object': 'feedback.rating', 'generation_id': body.generation_id,
            'choice': body.choice, 'rating': body.rating}

  @app.post('/v1/feedback/edit', responses=_ERRORS, tags=tags)
  def edit(body: EditRequest, _: str = fastapi.Depends(authorize)) -> dict[str, Any]:
    """A corrected text for one choice of a served generation."""
    check_choice(generation(body.generation_id), body.choice)
    eid = call(store.add_edit, body.generation_id, body.choice, body.text)
    return {'id': eid, 'object': 'feedback.edit', 'generation_id': body.generation_id,
            'choice': body.choice}

  @app.post('/v1/feedback/preference', responses=_ERRORS, tags=tags)
  def preference(body: PreferenceRequest,
                 _: str = fastapi.Depends(authorize)) -> dict[str, Any]:
    """Which of two outputs is better: two choices of one generation, or free texts."""
    if body.generation_id is not None:
      gen = generation(body.generation_id)
      chosen = check_choice(gen, body.chosen, 'chosen')
      rejected = check_choice(gen, body.rejected, 'rejected')
      pid = call(store.add_preference, gen['prompt'], chosen, rejected, [body.generation_id])
    else:
      pid = call(store.add_preference, body.prompt, body.chosen, body.rejected, [])
    return {'id': pid, 'object': 'feedback.preference', 'generation_id': body.generation_id}

  @app.get('/v1/review', responses=_ERRORS, tags=tags)
  def review_queue(status: Literal['pending', 'approved', 'rejected', 'all'] = 'pending',
                   limit: int = fastapi.Query(50, ge=1, le=500),
                   _: str = fastapi.Depends(authorize)) -> dict[str, Any]:
    """Flagged outputs waiting for (or past) a human decision, oldest first."""
    items = call(store.review_queue, None if status == 'all' else status, limit,
                 param='status')
    return {'object': 'list', 'data': items}

  @app.post('/v1/review/{item_id}', responses=_ERRORS, tags=tags)
  def decide(item_id: int, body: ReviewDecision,
             _: str = fastapi.Depends(authorize)) -> dict[str, Any]:
    """Approve or reject one review item."""
    try:
      store.decide_review(item_id, body.decision, body.reviewer)
    except KeyError as e:
      raise ApiError(404, f'review item {item_id} is not known here.', 'not_found_error',
                     'item_id') from e
    except ValueError as e:
      raise ApiError(422, str(e), param='decision') from e
    return {'id': item_id, 'object': 'review.item', 'status': body.decision}

  @app.get('/v1/feedback/stats', responses=_ERRORS, tags=tags)
  def stats(_: str = fastapi.Depends(authorize)) -> dict[str, Any]:
    """Counts of generations, ratings, edits, preferences and review items."""
    return store.stats()

  @app.get('/', response_class=responses.HTMLResponse, include_in_schema=False)
  def index():
    return responses.HTMLResponse(page, headers={'Cache-Control': 'no-store'})
