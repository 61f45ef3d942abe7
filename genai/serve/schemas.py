"""Request and response bodies of the HTTP API (the OpenAI-compatible shapes).

Unknown fields are ignored, as OpenAI clients send more than genai uses (logprobs,
penalties); every field genai reads is strictly typed and bounded here, so a bad value is
a 422 before any model code runs.
"""
from __future__ import annotations

from typing import Annotated, Literal

import pydantic
from pydantic import Field

MAX_SEED = 2**31 - 1
MAX_PROMPTS = 32   # prompts in one /v1/completions list
MAX_CHOICES = 64   # prompts x n in one request


class _Request(pydantic.BaseModel):
  """Strict types, as the OpenAPI schema states them: "n": 1.0 or "stream": 0 is a 422."""
  model_config = pydantic.ConfigDict(strict=True)


class _Sampling(_Request):
  model: str | None = Field(None, description='Ignored beyond a check: one model per server.')
  max_tokens: int = Field(16, ge=1, description='New tokens to generate (at most the '
                          "server's --max_new_tokens).")
  temperature: float = Field(1.0, ge=0.0, le=5.0, description='0 = greedy.')
  top_p: float = Field(1.0, gt=0.0, le=1.0, description='Nucleus mass; 1 = off.')
  top_k: int = Field(0, ge=0, le=100_000, description='0 = off.')
  stop: str | list[str] | None = Field(None, description='Up to 4 stop strings.')
  seed: int | None = Field(None, ge=0, le=MAX_SEED, description='Fixes the sample; '
                           'choice i uses seed + i. Random when absent.')
  n: int = Field(1, ge=1, le=8, description='Choices per prompt.')
  stream: bool = Field(False, description='Server-sent events, ending with data: [DONE].')
  user: str | None = Field(None, max_length=256)

  @pydantic.field_validator('stop')
  @classmethod
  def _check_stop(cls, v):
    stops = [v] if isinstance(v, str) else (v or [])
    if len(stops) > 4:
      raise ValueError('at most 4 stop strings')
    if any(not s for s in stops) or any(len(s) > 64 for s in stops):
      raise ValueError('stop strings must be 1 to 64 characters')
    return v

  def stop_list(self) -> tuple[str, ...]:
    return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class CompletionRequest(_Sampling):
  prompt: (Annotated[str, Field(min_length=1)] |
           Annotated[list[Annotated[str, Field(min_length=1)]],
                     Field(min_length=1, max_length=MAX_PROMPTS)]) = Field(
      ..., description='The text to continue, or a list of up to 32 texts (as in the OpenAI '
      'API): n choices per prompt, choice index = prompt index * n + sample index; '
      f'at most {MAX_CHOICES} choices in all.')

  @pydantic.field_validator('prompt', mode='before')
  @classmethod
  def _check_prompt(cls, v):
    """One message that names the problem (not one per member of the union)."""
    if isinstance(v, str):
      if not v:
        raise ValueError('prompt is empty; send at least one character')
      return v
    if isinstance(v, list):
      if not v:
        raise ValueError('prompt is an empty list; send at least one prompt')
      if len(v) > MAX_PROMPTS:
        raise ValueError(f'prompt lists {len(v)} prompts; send at most {MAX_PROMPTS} per '
                         'request')
      for i, p in enumerate(v):
        if not isinstance(p, str):
          raise ValueError(f'prompt[{i}] is a {type(p).__name__}; send text (token-id '
                           'prompts are not supported)')
        if not p:
          raise ValueError(f'prompt[{i}] is empty; send at least one character')
      return v
    raise ValueError(f'prompt is a {type(v).__name__}; send a string or a list of strings')


class ChatMessage(_Request):
  role: Literal['system', 'user', 'assistant']
  content: str


class ChatRequest(_Sampling):
  messages: list[ChatMessage] = Field(..., min_length=1, max_length=256)


class ImageRequest(_Request):
  model: str | None = None
  prompt: str | None = Field(None, max_length=4096, description='Ignored: genai image '
                             'models are not text-conditioned (use label).')
  n: int = Field(1, ge=1, le=16)
  seed: int | None = Field(None, ge=0, le=MAX_SEED)
  label: int | None = Field(None, ge=0, le=100_000, description='Class of a '
                            'class-conditional model.')
  guidance: float | None = Field(None, ge=0.0, le=20.0, description='Classifier-free '
                                 'guidance (diffusion); default from the workdir config.')
  steps: int | None = Field(None, ge=1, le=1000, description='DDIM steps (diffusion).')
  response_format: Literal['b64_json'] = 'b64_json'


class ErrorDetail(pydantic.BaseModel):
  message: str
  type: str
  param: str | None = None
  code: str | None = None


class ErrorResponse(pydantic.BaseModel):
  error: ErrorDetail


class Usage(pydantic.BaseModel):
  prompt_tokens: int
  completion_tokens: int
  total_tokens: int


class CompletionChoice(pydantic.BaseModel):
  index: int
  text: str
  finish_reason: str | None
  logprobs: None = None


class CompletionResponse(pydantic.BaseModel):
  id: str
  object: Literal['text_completion'] = 'text_completion'
  created: int
  model: str
  system_fingerprint: str
  choices: list[CompletionChoice]
  usage: Usage


class ChatChoice(pydantic.BaseModel):
  index: int
  message: ChatMessage
  finish_reason: str | None


class ChatResponse(pydantic.BaseModel):
  id: str
  object: Literal['chat.completion'] = 'chat.completion'
  created: int
  model: str
  system_fingerprint: str
  choices: list[ChatChoice]
  usage: Usage


class ImageData(pydantic.BaseModel):
  b64_json: str


class ImageResponse(pydantic.BaseModel):
  created: int
  model: str
  system_fingerprint: str
  data: list[ImageData]


class ModelCard(pydantic.BaseModel):
  id: str
  object: Literal['model'] = 'model'
  owned_by: str = 'genai'
  kind: str
  version: str


class ModelList(pydantic.BaseModel):
  object: Literal['list'] = 'list'
  data: list[ModelCard]
