"""Character, SentencePiece, GPT-2 BPE and HuggingFace tokenizers behind one interface.

A tokenizer is saved into the run's workdir (`tokenizer.json`, plus a model
file) so a resumed run, or a sampler pointed at the workdir, gets exactly the
vocabulary the model was trained with.

`HFTokenizer` ('hf') wraps a HuggingFace `tokenizers` tokenizer, read from a model's
tokenizer.json or built from a GGUF file's metadata (byte-level BPE), with the model's
BOS/EOS ids and chat template; in a workdir it is `hf_tokenizer.json` (HF's format) next
to genai's own `tokenizer.json`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any, Sequence

import numpy as np

from genai import paths
from genai.data import gguf_file

TOKENIZER_JSON = 'tokenizer.json'
SP_MODEL_FILE = 'tokenizer.model'
GPT2_RANKS_FILE = 'gpt2.tiktoken'
HF_TOKENIZER_FILE = 'hf_tokenizer.json'
VALID_NAMES = ('char', 'sentencepiece', 'gpt2_bpe', 'hf')

# GPT-2's pre-tokenisation regex (tiktoken's r50k_base / gpt2 encoding).
GPT2_PAT_STR = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                r"""|\s+(?!\S)|\s+""")
GPT2_EOT = '<|endoftext|>'
GPT2_RANKS_SHA256 = (
    '306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930')
_GPT2_RANKS_HELP = (
    'get the GPT-2 ranks file (gpt2.tiktoken, sha256 '
    f'{GPT2_RANKS_SHA256[:12]}...) from '
    'https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken '
    'or from the openai-whisper sdist (`pip download --no-deps --no-binary '
    ':all: openai-whisper==20250625`, file whisper/assets/gpt2.tiktoken) and '
    'set tokenizer.bpe_ranks_path to it')


def _as_id_list(ids: Any) -> list[int]:
  return np.asarray(ids, dtype=np.int64).reshape(-1).tolist()


def _write_json(directory: str, payload: dict[str, Any]) -> None:
  # Written last and atomically: a tokenizer.json on disk means the tokenizer
  # (model files included) is complete.
  # A per-process temporary name: on a shared workdir several hosts may write at once.
  d = paths.path(directory)
  tmp = d / f'{TOKENIZER_JSON}.{os.getpid()}.tmp'
  tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding='utf-8')
  tmp.replace(d / TOKENIZER_JSON)


class Tokenizer:
  """Interface shared by all tokenizers: text <-> int32 id arrays."""

  name: str = ''
  vocab_size: int = 0
  eos_id: int | None = None

  def encode(self, text: str) -> np.ndarray:
    """Returns the ids of `text` as a 1-D int32 array."""
    raise NotImplementedError

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Returns the text for `ids` (a list or array of ints)."""
    raise NotImplementedError

  def save(self, directory: str) -> None:
    """Writes tokenizer.json (and any model file) into `directory`."""
    raise NotImplementedError

  def identity(self) -> str:
    """'NAME:SHA256' of what decides the ids (vocabulary, model, ranks): equal exactly when
    two tokenizers map text to the same ids. Prepared data (genai.data.prepare) records it,
    so training with another tokenizer is refused."""
    return f'{self.name}:{hashlib.sha256(self._identity_bytes()).hexdigest()}'

  def _identity_bytes(self) -> bytes:
    raise NotImplementedError


class CharTokenizer(Tokenizer):
  """One id per character; the vocabulary is the training corpus's chars."""

  name = 'char'

  def __init__(self, chars: str):
    if not chars:
      raise ValueError('CharTokenizer needs a non-empty vocabulary; build it '
                       'from a non-empty corpus.')
    if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
      raise ValueError('CharTokenizer chars must be sorted and unique; build '
                       'it with CharTokenizer.from_text(corpus).')
    self.chars = chars
    self.vocab_size = len(chars)
    self.eos_id = None
    # Sorted code points let encode() map a whole corpus with one
    # searchsorted instead of a Python dict lookup per character.
    self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)

  @classmethod
  def from_text(cls, text: str) -> 'CharTokenizer':
    return cls(''.join(sorted(set(text))))

  def encode(self, text: str) -> np.ndarray:
    cps = np.frombuffer(text.encode('utf-32-le'), dtype=np.uint32)
    if self._codepoints[-1] < 2**16 and len(cps) > 2**16:
      # A table over the Basic Multilingual Plane: one gather, ~8x a searchsorted on big
      # texts (data preparation). -1 marks characters outside the vocabulary.
      table = np.full(2**16 + 1, -1, np.int32)
      table[self._codepoints] = np.arange(self.vocab_size, dtype=np.int32)
      ids = table[np.minimum(cps, 2**16)]
      if ids.min() >= 0:
        return ids
    ids = np.searchsorted(self._codepoints, cps)
    ids_clipped = np.minimum(ids, self.vocab_size - 1)
    known = self._codepoints[ids_clipped] == cps
    if not known.all():
      unknown = sorted({chr(c) for c in cps[~known].tolist()})
      shown = ', '.join(repr(c) for c in unknown[:10])
      more = f' (and {len(unknown) - 10} more)' if len(unknown) > 10 else ''
      raise ValueError(
          f'CharTokenizer cannot encode {len(unknown)} character(s) not in its '
          f'vocabulary: {shown}{more}. The vocabulary comes from the training '
          'corpus; remove these characters, or use a subword tokenizer '
          "(tokenizer.name='sentencepiece' or 'gpt2_bpe') that handles any "
          'text.')
    return ids_clipped.astype(np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    chars = self.chars
    return ''.join(chars[i] for i in _as_id_list(ids))

  def save(self, directory: str) -> None:
    paths.path(directory).mkdir(parents=True, exist_ok=True)
    _write_json(directory, {'name': self.name, 'chars': self.chars})

  def _identity_bytes(self) -> bytes:
    return self.chars.encode('utf-8', 'surrogatepass')


class SentencePieceTokenizer(Tokenizer):
  """SentencePiece BPE/unigram model with exact, lossless round trips."""

  name = 'sentencepiece'
  _SPACE_MARK = '\u2581'  # SentencePiece's whitespace symbol.

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = int(self._sp.get_piece_size())
    eos = int(self._sp.eos_id())
    self.eos_id = eos if eos >= 0 else None
    # SentencePiece reads a literal U+2581 in the input as a space; we emit
    # its UTF-8 bytes as byte-fallback pieces so it survives the round trip.
    self._mark_ids = [
        self._sp.piece_to_id(f'<0x{b:02X}>')
        for b in self._SPACE_MARK.encode('utf-8')]

  @classmethod
  def train(cls, text: str, *, vocab_size: int, model_type: str = 'bpe',
            character_coverage: float = 0.9995,
            input_sentence_size: int = 2_000_000) -> 'SentencePieceTokenizer':
    """Trains a model on `text`; lossless for any text at encode time."""
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    if model_type not in ('bpe', 'unigram'):
      raise ValueError(
          f"tokenizer.sp_model_type={model_type!r} is not supported; use "
          "'bpe' or 'unigram'.")
    sentences = list(_training_sentences(text))
    if not sentences:
      raise ValueError('SentencePiece needs non-whitespace training text; '
                       'the corpus has none.')
    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(sentences),
          model_writer=model,
          vocab_size=int(vocab_size),
          model_type=model_type,
          # Exact round trips: no NFKC, keep every space, bytes for anything
          # unseen (newlines included: they never occur in a training line).
          normalization_rule_name='identity',
          remove_extra_whitespaces=False,
          add_dummy_prefix=False,
          byte_fallback=True,
          split_digits=True,
          character_coverage=character_coverage,
          # Big corpora (lm1b) are subsampled rather than held in RAM twice.
          input_sentence_size=input_sentence_size,
          shuffle_input_sentence=True,
          max_sentence_length=16384,
          num_threads=max(1, min(4, os.cpu_count() or 1)),
          minloglevel=2,
      )
    except RuntimeError as e:
      raise ValueError(
          f'SentencePiece training failed for tokenizer.vocab_size='
          f'{vocab_size} ({e}). If the vocabulary is too large for this '
          'corpus, lower tokenizer.vocab_size (it must also exceed the 259 '
          'byte/control pieces).') from e
    return cls(model.getvalue())

  def encode(self, text: str) -> np.ndarray:
    if self._SPACE_MARK not in text:
      return np.asarray(self._sp.encode(text), dtype=np.int32)
    parts = self._sp.encode(text.split(self._SPACE_MARK))
    ids = list(parts[0])
    for part in parts[1:]:
      ids.extend(self._mark_ids)
      ids.extend(part)
    return np.asarray(ids, dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self._sp.decode(_as_id_list(ids))

  def save(self, directory: str) -> None:
    d = paths.path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / SP_MODEL_FILE).write_bytes(self.model_proto)
    _write_json(directory, {'name': self.name, 'model_file': SP_MODEL_FILE,
                            'vocab_size': self.vocab_size})

  def _identity_bytes(self) -> bytes:
    return self.model_proto


def _training_sentences(text: str, max_chars: int = 4000):
  """Yields newline-free training lines, long lines cut into pieces."""
  # SentencePiece treats each input as one sentence and silently drops ones
  # longer than max_sentence_length bytes, so a corpus without newlines
  # would otherwise train on nothing.
  for line in text.split('\n'):
    if not line.strip():
      continue
    for start in range(0, len(line), max_chars):
      yield line[start:start + max_chars]


class GPT2BPETokenizer(Tokenizer):
  """GPT-2's byte-level BPE (50,257 ids) via tiktoken, from a local file."""

  name = 'gpt2_bpe'

  def __init__(self, bpe_ranks_path: str):
    import tiktoken  # pylint: disable=import-outside-toplevel
    from tiktoken.load import load_tiktoken_bpe  # pylint: disable=import-outside-toplevel
    if not bpe_ranks_path:
      raise ValueError(f'tokenizer.bpe_ranks_path is not set; {_GPT2_RANKS_HELP}.')
    if bpe_ranks_path.startswith(('http://', 'https://')):
      raise ValueError(
          f'tokenizer.bpe_ranks_path={bpe_ranks_path!r} is a web URL; genai reads '
          f'the ranks from a file (local or gs://): {_GPT2_RANKS_HELP}.')
    path = paths.join(bpe_ranks_path)
    if not paths.path(path).is_file():
      raise ValueError(
          f'tokenizer.bpe_ranks_path={bpe_ranks_path!r}: no such file; '
          f'{_GPT2_RANKS_HELP}.')
    sha = hashlib.sha256(paths.path(path).read_bytes()).hexdigest()
    self.ranks_sha256 = sha
    # tiktoken caches files by the hash of their *path*; passing the content
    # hash makes it drop a stale cache entry if the file at this path changed.
    with paths.local_copy(path) as local:
      ranks = load_tiktoken_bpe(local, expected_hash=sha)
    if not ranks:
      raise ValueError(f'tokenizer.bpe_ranks_path={path!r} holds no ranks; '
                       f'{_GPT2_RANKS_HELP}.')
    self.bpe_ranks_path = path
    self.eos_id = max(ranks.values()) + 1  # 50256 for GPT-2.
    self._enc = tiktoken.Encoding(
        name='gpt2', pat_str=GPT2_PAT_STR, mergeable_ranks=ranks,
        special_tokens={GPT2_EOT: self.eos_id})
    self.vocab_size = int(self._enc.n_vocab)

  def encode(self, text: str) -> np.ndarray:
    # Ordinary encoding: a literal '<|endoftext|>' in the corpus stays text,
    # so decode(encode(text)) == text; callers append eos_id explicitly.
    return np.asarray(self._enc.encode_ordinary(text), dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self._enc.decode(_as_id_list(ids))

  def save(self, directory: str) -> None:
    d = paths.path(directory)
    d.mkdir(parents=True, exist_ok=True)
    copy = d / GPT2_RANKS_FILE
    # A copy keeps the workdir self-contained when the original moves.
    if str(copy) != self.bpe_ranks_path:
      copy.write_bytes(paths.path(self.bpe_ranks_path).read_bytes())
    _write_json(directory, {'name': self.name,
                            'bpe_ranks_path': self.bpe_ranks_path})

  def _identity_bytes(self) -> bytes:
    return f'{self.ranks_sha256}:{self.eos_id}'.encode()


# GGUF `tokenizer.ggml.pre` types whose pre-tokenisation genai reproduces, each as an HF
# pre-tokenizer (JSON). llama.cpp splits 'smollm' (and the StarCoder family) with `\p{N}`
# (one digit per piece) and then GPT-2's regex, which is what those models' own HF
# tokenizer.json spells Digits(individual_digits) + ByteLevel(use_regex). 'gpt-2': GPT-2's
# regex only (also used for a file without tokenizer.ggml.pre, as transformers does).
_BYTE_LEVEL = {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True,
               'use_regex': True}
_DIGITS_THEN_BYTE_LEVEL = {'type': 'Sequence', 'pretokenizers': [
    {'type': 'Digits', 'individual_digits': True}, _BYTE_LEVEL]}
GGUF_PRE_TOKENIZERS = {
    'smollm': _DIGITS_THEN_BYTE_LEVEL, 'starcoder': _DIGITS_THEN_BYTE_LEVEL,
    'refact': _DIGITS_THEN_BYTE_LEVEL, 'gpt-2': _BYTE_LEVEL,
}
_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values.


def _hf_token_id(tok: Any, token: Any) -> int | None:
  """Id of a special token given as a string or as HF's {"content": ...} dict."""
  if isinstance(token, dict):
    token = token.get('content')
  return None if token is None else tok.token_to_id(token)


def _hf_chat_template(path: str, cfg: dict[str, Any]) -> str | None:
  """The chat template of an HF model folder: chat_template.jinja, else tokenizer_config's."""
  jinja_path = paths.path(path).parent / 'chat_template.jinja'
  if jinja_path.is_file():
    return jinja_path.read_text(encoding='utf-8')
  template = cfg.get('chat_template')
  if isinstance(template, list):  # named templates: [{'name': ..., 'template': ...}]
    template = next((t.get('template') for t in template if t.get('name') == 'default'), None)
  return template


class HFTokenizer(Tokenizer):
  """A HuggingFace `tokenizers` tokenizer: from a tokenizer.json, or a GGUF file's metadata.

  `encode` adds no BOS/EOS (callers add `bos_id`, as `add_bos_token` says the model wants)
  and, like HF, reads special tokens written in the text (`<|im_start|>` -> one id), so a
  rendered chat template encodes as the model expects; `decode` keeps them, so
  decode(encode(text)) == text.
  """

  name = 'hf'

  def __init__(self, tokenizer_json: str, *, bos_id: int | None = None,
               eos_id: int | None = None, chat_template: str | None = None,
               add_bos_token: bool = False, source: str = 'tokenizer.json'):
    from tokenizers import Tokenizer as HFTok  # pylint: disable=import-outside-toplevel
    try:
      self._tok = HFTok.from_str(tokenizer_json)
    except Exception as e:  # the Rust side raises a bare Exception on bad JSON.
      raise ValueError(f'{source} is not a valid HF tokenizer.json ({e}); pass the '
                       'tokenizer.json file of a HuggingFace model, or a .gguf file.') from e
    self.source = source
    self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
    self.bos_id, self.eos_id = bos_id, eos_id
    self.chat_template = chat_template
    self.add_bos_token = bool(add_bos_token)

  @classmethod
  def from_file(cls, path: str) -> 'HFTokenizer':
    """From an HF tokenizer.json, or from a .gguf file's tokenizer metadata.

    For a tokenizer.json, a `tokenizer_config.json` beside it (HF's layout) supplies
    `bos_token`, `eos_token`, `add_bos_token` and `chat_template` when present.
    """
    path = paths.join(path)
    if not paths.path(path).is_file():
      raise ValueError(f'tokenizer.hf_tokenizer_path={path!r}: no such file; point it at an '
                       'HF tokenizer.json or a .gguf model file.')
    with paths.path(path).open('rb') as f:
      is_gguf = f.read(4) == b'GGUF'
    if is_gguf:
      with paths.local_copy(path) as local:
        return cls.from_gguf_metadata(gguf_file.read_metadata(local), source=path)
    text = paths.path(path).read_text(encoding='utf-8')
    cfg_path = paths.path(path).parent / 'tokenizer_config.json'
    cfg: dict[str, Any] = {}
    if cfg_path.is_file():
      cfg = json.loads(cfg_path.read_text(encoding='utf-8'))
    tok = cls(text, source=path, chat_template=_hf_chat_template(path, cfg),
              add_bos_token=bool(cfg.get('add_bos_token', False)))
    tok.bos_id = _hf_token_id(tok._tok, cfg.get('bos_token'))
    tok.eos_id = _hf_token_id(tok._tok, cfg.get('eos_token'))
    return tok

  @classmethod
  def from_vocab_merges(cls, vocab_path: str, merges_path: str) -> 'HFTokenizer':
    """GPT-2-style byte-level BPE from HF's older vocab.json + merges.txt pair."""
    from tokenizers import Tokenizer as HFTok  # pylint: disable=import-outside-toplevel
    from tokenizers import decoders, models, pre_tokenizers  # pylint: disable=import-outside-toplevel
    for path in (vocab_path, merges_path):
      if not os.path.isfile(path):
        raise ValueError(f'{path}: no such file; a GPT-2 style tokenizer needs vocab.json '
                         'and merges.txt side by side.')
    tok = HFTok(models.BPE.from_file(vocab_path, merges_path))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    eos = tok.token_to_id(GPT2_EOT)
    return cls(tok.to_str(), eos_id=eos, bos_id=eos, source=vocab_path)

  @classmethod
  def from_gguf_metadata(cls, meta: dict[str, Any], source: str = 'GGUF file'
                         ) -> 'HFTokenizer':
    """Byte-level BPE from `tokenizer.ggml.*` metadata (as `gguf.read_metadata` returns it)."""
    return cls(_gguf_tokenizer_json(meta, source), source=source,
               bos_id=meta.get('tokenizer.ggml.bos_token_id'),
               eos_id=meta.get('tokenizer.ggml.eos_token_id'),
               chat_template=meta.get('tokenizer.chat_template'),
               add_bos_token=bool(meta.get('tokenizer.ggml.add_bos_token', False)))

  def encode(self, text: str) -> np.ndarray:
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return np.asarray(ids, dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self._tok.decode(_as_id_list(ids), skip_special_tokens=False)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def apply_chat_template(self, messages: Sequence[dict[str, Any]],
                          add_generation_prompt: bool = True) -> str:
    """Renders `messages` ([{'role': ..., 'content': ...}]) with the model's Jinja template.

    Rendered like HF's `apply_chat_template(tokenize=False)`: a sandboxed Jinja environment
    with trim_blocks/lstrip_blocks, `bos_token`/`eos_token` and `raise_exception` in scope.
    """
    if not self.chat_template:
      raise ValueError(f'{self.source} has no chat template; use a chat/instruct model '
                       '(its GGUF tokenizer.chat_template or tokenizer_config.json '
                       'chat_template).')
    try:
      from jinja2 import ext  # pylint: disable=import-outside-toplevel
      from jinja2.exceptions import TemplateError  # pylint: disable=import-outside-toplevel
      from jinja2.sandbox import ImmutableSandboxedEnvironment  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError('chat templates need jinja2: pip install jinja2') from e

    def raise_exception(message):
      raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[ext.loopcontrols])
    env.filters['tojson'] = lambda x, indent=None: json.dumps(x, ensure_ascii=False,
                                                              indent=indent)
    env.globals['raise_exception'] = raise_exception
    special = {f'{k}_token': self._tok.id_to_token(i) if i is not None else None
               for k, i in (('bos', self.bos_id), ('eos', self.eos_id))}
    try:
      return env.from_string(self.chat_template).render(
          messages=list(messages), add_generation_prompt=add_generation_prompt, **special)
    except TemplateError as e:
      raise ValueError(f'the chat template of {self.source} failed to render these '
                       f'messages: {e}') from e

  def save_hf(self, directory: str) -> None:
    """HF's own layout (tokenizer.json + tokenizer_config.json), for an exported checkpoint
    that transformers' AutoTokenizer loads."""
    d = paths.path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / 'tokenizer.json').write_text(self._tok.to_str(), encoding='utf-8')
    name = lambda i: self._tok.id_to_token(i) if i is not None else None
    cfg = {'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': name(self.bos_id),
           'eos_token': name(self.eos_id), 'add_bos_token': self.add_bos_token}
    if self.chat_template:
      cfg['chat_template'] = self.chat_template
    (d / 'tokenizer_config.json').write_text(json.dumps(cfg, ensure_ascii=False, indent=1),
                                             encoding='utf-8')

  def _identity_bytes(self) -> bytes:
    # The canonical JSON of the tokenizer (model, pre-tokenizer, added tokens) and the
    # special ids; not the chat template or the source path, which do not change ids.
    canonical = json.dumps(json.loads(self._tok.to_str()), sort_keys=True, ensure_ascii=False)
    return f'{canonical}\n{self.bos_id}:{self.eos_id}'.encode()

  def save(self, directory: str) -> None:
    d = paths.path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / HF_TOKENIZER_FILE).write_text(self._tok.to_str(), encoding='utf-8')
    _write_json(directory, {
        'name': self.name, 'hf_file': HF_TOKENIZER_FILE, 'vocab_size': self.vocab_size,
        'bos_id': self.bos_id, 'eos_id': self.eos_id, 'add_bos_token': self.add_bos_token,
        'chat_template': self.chat_template, 'source': self.source})


def _gguf_tokenizer_json(meta: dict[str, Any], source: str) -> str:
  """An HF tokenizer.json (as a string) for a GGUF file's byte-level BPE vocabulary."""
  model = meta.get('tokenizer.ggml.model')
  if model != 'gpt2':
    raise ValueError(f'{source}: tokenizer.ggml.model={model!r} is not supported; genai builds '
                     "only byte-level BPE ('gpt2') tokenizers from GGUF metadata. Pass the "
                     "model's HF tokenizer.json instead.")
  pre = meta.get('tokenizer.ggml.pre', 'gpt-2')
  if pre not in GGUF_PRE_TOKENIZERS:
    raise ValueError(f'{source}: tokenizer.ggml.pre={pre!r} is not supported; genai knows '
                     f'{sorted(GGUF_PRE_TOKENIZERS)}. Pass the model\'s HF tokenizer.json '
                     'instead.')
  tokens = list(meta.get('tokenizer.ggml.tokens') or [])
  merges = list(meta.get('tokenizer.ggml.merges') or [])
  if not tokens or not merges:
    raise ValueError(f'{source} has no tokenizer.ggml.tokens/merges; it carries no BPE '
                     'tokenizer. Pass the model\'s HF tokenizer.json instead.')
  vocab = {t: i for i, t in enumerate(tokens)}
  if len(vocab) != len(tokens):
    raise ValueError(f'{source}: tokenizer.ggml.tokens has {len(tokens) - len(vocab)} '
                     'duplicate tokens; it is not a consistent BPE vocabulary.')
  types = list(meta.get('tokenizer.ggml.token_type') or [])
  added = [{'id': i, 'content': tokens[i], 'single_word': False, 'lstrip': False,
            'rstrip': False, 'normalized': False, 'special': ty == _GGUF_CONTROL}
           for i, ty in enumerate(types) if ty in (_GGUF_CONTROL, _GGUF_USER_DEFINED)]
  return json.dumps({
      'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': added,
      'normalizer': None, 'pre_tokenizer': GGUF_PRE_TOKENIZERS[pre],
      'post_processor': {'type': 'ByteLevel', 'add_prefix_space': False,
                         'trim_offsets': False, 'use_regex': True},
      'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True,
                  'use_regex': True},
      'model': {'type': 'BPE', 'dropout': None, 'unk_token': None,
                'continuing_subword_prefix': None, 'end_of_word_suffix': None,
                'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                'vocab': vocab, 'merges': [m.split(' ', 1) for m in merges]},
  }, ensure_ascii=False)


def load_tokenizer(workdir: str) -> Tokenizer:
  """Loads the tokenizer that `make_tokenizer` saved into `workdir`."""
  meta_path = paths.join(workdir, TOKENIZER_JSON)
  if not paths.path(meta_path).is_file():
    raise FileNotFoundError(
        f'no {TOKENIZER_JSON} in {workdir!r}: is it a genai LM workdir? Point '
        'at the directory a training run wrote, or train one first.')
  meta = json.loads(paths.path(meta_path).read_text(encoding='utf-8'))
  name = meta.get('name')
  if name == 'char':
    return CharTokenizer(meta['chars'])
  if name == 'sentencepiece':
    model_path = paths.join(workdir, meta.get('model_file', SP_MODEL_FILE))
    if not paths.path(model_path).is_file():
      raise FileNotFoundError(
          f'{meta_path} names a SentencePiece tokenizer but {model_path!r} is '
          'missing; restore it, or delete tokenizer.json to retrain.')
    return SentencePieceTokenizer(paths.path(model_path).read_bytes())
  if name == 'gpt2_bpe':
    copy = paths.join(workdir, GPT2_RANKS_FILE)
    path = copy if paths.path(copy).is_file() else meta.get('bpe_ranks_path', '')
    return GPT2BPETokenizer(path)
  if name == 'hf':
    return _load_hf(workdir, meta_path, meta)
  raise ValueError(
      f'{meta_path} names unknown tokenizer {name!r}; expected one of '
      f'{", ".join(VALID_NAMES)}. Was it written by another program?')


def _load_hf(workdir: str, meta_path: str, meta: dict[str, Any]) -> HFTokenizer:
  hf_path = paths.join(workdir, meta.get('hf_file', HF_TOKENIZER_FILE))
  if not paths.path(hf_path).is_file():
    raise FileNotFoundError(
        f'{meta_path} names an HF tokenizer but {hf_path!r} is missing; restore it, or '
        'delete tokenizer.json to build it again from tokenizer.hf_tokenizer_path.')
  return HFTokenizer(paths.path(hf_path).read_text(encoding='utf-8'), bos_id=meta.get('bos_id'), eos_id=meta.get('eos_id'),
                     chat_template=meta.get('chat_template'),
                     add_bos_token=bool(meta.get('add_bos_token', False)),
                     source=meta.get('source') or hf_path)


def make_tokenizer(tok_cfg: Any, text: str, workdir: str | None) -> Tokenizer:
  """Returns the workdir's saved tokenizer, or builds one from `text`.

  `tok_cfg.name` is 'char', 'sentencepiece' (uses `vocab_size`,
  `sp_model_type`), 'gpt2_bpe' (uses `bpe_ranks_path`) or 'hf' (uses
  `hf_tokenizer_path`: an HF tokenizer.json or a .gguf file). A new tokenizer is
  saved into `workdir` (when given) so resumed runs reuse its vocabulary.
  """
  name = getattr(tok_cfg, 'name', None)
  if name not in VALID_NAMES:
    raise ValueError(
        f'tokenizer.name={name!r} is not a known tokenizer; use one of '
        f'{", ".join(repr(n) for n in VALID_NAMES)}.')
  if workdir is not None and (paths.path(workdir) / TOKENIZER_JSON).is_file():
    tok = load_tokenizer(workdir)
    if tok.name != name:
      raise ValueError(
          f'workdir {workdir!r} holds a {tok.name!r} tokenizer but '
          f'tokenizer.name={name!r}; use a fresh workdir, or set '
          f'tokenizer.name={tok.name!r} to resume this run.')
    want = getattr(tok_cfg, 'vocab_size', None)
    if name == 'sentencepiece' and want and int(want) != tok.vocab_size:
      raise ValueError(
          f'workdir {workdir!r} holds a SentencePiece tokenizer with '
          f'vocab_size={tok.vocab_size} but tokenizer.vocab_size={want}; use '
          f'a fresh workdir, or set tokenizer.vocab_size={tok.vocab_size} to '
          'resume this run.')
    return tok

  if name == 'char':
    if not text:
      raise ValueError('cannot build a char tokenizer from an empty corpus; '
                       'check the data config.')
    tok: Tokenizer = CharTokenizer.from_text(text)
  elif name == 'sentencepiece':
    tok = SentencePieceTokenizer.train(
        text,
        vocab_size=int(getattr(tok_cfg, 'vocab_size', 0) or 1024),
        model_type=getattr(tok_cfg, 'sp_model_type', None) or 'bpe',
        character_coverage=float(
            getattr(tok_cfg, 'sp_character_coverage', None) or 0.9995))
  elif name == 'hf':
    path = getattr(tok_cfg, 'hf_tokenizer_path', None) or ''
    if not path:
      raise ValueError("tokenizer.name='hf' needs tokenizer.hf_tokenizer_path: an HF "
                       'tokenizer.json or a .gguf model file.')
    tok = HFTokenizer.from_file(path)
  else:
    tok = GPT2BPETokenizer(getattr(tok_cfg, 'bpe_ranks_path', None) or '')
  if workdir is not None and _is_chief():
    tok.save(workdir)  # Every host builds the same tokenizer; one writes it.
  return tok


def _is_chief() -> bool:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index() == 0
