"""One benchmark report for every family: run the scripts (or read their last results) and
write `docs/benchmarks.md`.

  python -m benchmarks.report                        # rewrite docs/benchmarks.md from the results
  python -m benchmarks.report --list                 # the benchmarks, their budgets, what is on record
  python -m benchmarks.report --run lm_train_fast,serve_load    # rerun these, then rewrite
  python -m benchmarks.report --run missing          # everything with no result on record
  python -m benchmarks.report --run all              # every benchmark at its stated budget

Each run goes through `run_benchmark`: the script runs in its own process and its stdout
(log lines dropped) is stored with the command, the commit, the date, the wall time, the peak
RSS of its largest process and the machine (CPU, cores, memory, accelerator, jax version) in
`benchmarks/results/<name>.json`. While it runs, its stdout and stderr go to
`runs/bench/report/<name>.log` and `.err`. A failed run keeps the previous result. The
Markdown is a pure function of the result files (`render`), so a test checks that
`docs/benchmarks.md` matches them, and nothing in it is typed by hand. `BENCHMARKS` lists every script with its stated budget,
what it needs, and `headline`, which picks the quality, speed and memory figures out of its
output. Scripts run in list order: `compress_report` reads the workdirs `lm_distill` wrote,
and the FID rows read the samples the image benchmarks wrote.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Callable

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
DOC = 'docs/benchmarks.md'
TINY = '{data}/tinyshakespeare/input.txt'
MNIST = '{data}/mnist'

# Lines a script's libraries print that are not results (TF/XLA/absl logging, orbax warnings).
_NOISE = re.compile(r'^(WARNING|INFO|ERROR|[IWE]\d{4} |[IWE]0000 |\s*warnings\.warn|'
                    r'.*oneDNN custom operations)')
_TRANSCRIPT_LINES = 400  # the longest stdout kept per result


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """One script at its stated budget. `args` follow `python`; `{data}` is --data_dir."""
  name: str
  family: str
  args: tuple[str, ...]
  budget: str  # what the script is asked to do, and about how long it takes on 2 cores
  minutes: float  # that time, for --list and --run all
  needs: tuple[str, ...] = ()  # paths ({data}/...), 'module:NAME', or 'smollm2' (the cache)
  headline: Callable[[list[dict], str], dict] = lambda objs, text: {}


# ---- reading a script's stdout -------------------------------------------------------------


def json_objects(text: str) -> list[dict]:
  """Every JSON object that starts a line (or follows 'RESULT '), in order."""
  decoder, out, i = json.JSONDecoder(), [], 0
  for m in re.finditer(r'(?m)^(?:RESULT )?\{', text):
    if m.start() < i:
      continue
    start = m.end() - 1
    try:
      obj, end = decoder.raw_decode(text, start)
    except json.JSONDecodeError:
      continue
    if isinstance(obj, dict):
      out.append(obj)
    i = end
  return out


def markdown_tables(text: str) -> list[list[str]]:
  """The Markdown tables a script printed, each as its lines."""
  tables, cur = [], []
  for line in text.splitlines():
    if line.startswith('|'):
      cur.append(line.rstrip())
    elif cur:
      tables.append(cur)
      cur = []
  if cur:
    tables.append(cur)
  return [t for t in tables if len(t) >= 3 and set(t[1]) <= set('|-: ')]


def table_rows(text: str) -> list[dict[str, str]]:
  """The rows of every printed Markdown table, as {header: cell}."""
  rows = []
  for t in markdown_tables(text):
    head = [c.strip() for c in t[0].strip('|').split('|')]
    for line in t[2:]:
      rows.append(dict(zip(head, [c.strip() for c in line.strip('|').split('|')])))
  return rows


def _pick(objs, **match):
  """The last object holding every key of `match` with that value (None: any value)."""
  for o in reversed(objs):
    if all(k in o and (v is None or o[k] == v) for k, v in match.items()):
      return o
  raise KeyError(f'no printed object with {match}')


def _n(x, digits=0):
  return f'{x:,.{digits}f}'


# ---- headline figures of each script --------------------------------------------------------


def _lm_step_speed(objs, text):
  s = _pick(objs, torch_over_genai=None) if any('torch_over_genai' in o for o in objs) else \
      _pick(objs, genai_k8=None)
  k8 = s['genai_k8']
  speed = f'{k8["ms_per_step"]} ms/step, {_n(k8["tokens_per_sec"])} tokens/s (8 steps/call)'
  if 'torch_eager' in s:
    speed += (f'; PyTorch eager {s["torch_eager"]["ms_per_step"]} ms/step '
              f'(torch/genai {s["torch_over_genai"]})')
  return {'speed': speed}


def _lm_train(objs, text):
  r = _pick(objs, final_val_loss=None)
  reached = (f'reached {r["target_val_loss"]} at step {r["steps_to_target"]} after '
             f'{r["train_seconds_to_target"]} s of training' if r.get('steps_to_target')
             else f'{r["target_val_loss"]} not reached')
  return {'quality': f'val loss {r["final_val_loss"]:.4f} ({reached})',
          'speed': f'{r["ms_per_step_isolated"]} ms/step, {_n(r["tokens_per_sec_isolated"])} '
                   f'tokens/s (isolated); {r["wall_seconds_total"]:.0f} s wall',
          'memory': f'{r["peak_rss_mib"]:,} MiB'}


def _nanogpt(objs, text):
  s = _pick(objs, summary=True)
  rows = [o for o in objs if 'val_loss_whole_split' in o]
  return {'quality': f'val loss over seeds 0-{s["seeds"] - 1}: whole split '
                     f'{s["val_loss_whole_split_mean"]:.4f} mean ({s["val_loss_whole_split_min"]:.4f}'
                     f'-{s["val_loss_whole_split_max"]:.4f}); nanoGPT\'s 20-batch estimate '
                     f'{s["val_loss_estimate_mean"]:.4f} mean ({s["val_loss_estimate_min"]:.4f}'
                     f'-{s["val_loss_estimate_max"]:.4f})',
          'speed': f'{min(r["ms_per_step"] for r in rows)} ms/step (PyTorch eager, best seed)'}


def _sharding(objs, text):
  rows = table_rows(text)
  losses = sorted({r['loss (last window)'] for r in rows})
  one = {r['layout']: r['ms/step'] for r in rows if r['devices'] == '1'}
  eight = {r['layout']: r['ms/step'] for r in rows if r['devices'] == '8'}
  return {'quality': f'{len(rows)} device x layout runs, final loss '
                     f'{" / ".join(losses)} (identical: {len(losses) == 1})',
          'speed': 'ms/step on 1 / 8 fake devices: ' + ', '.join(
              f'{k} {one[k]} / {eight.get(k, "-")}' for k in one)}


def _lm_mfu(objs, text):
  r = _pick(objs, mfu=None)
  return {'speed': f'{r["ms_per_step"]} ms/step, {_n(r["tokens_per_sec"])} tokens/s, MFU '
                   f'{100 * r["mfu"]:.1f}% of {r["peak_tflops_per_device"]} TFLOP/s '
                   f'({r["peak_source"]}) on {r["devices"]} x {r["device"]}'}


def _lm_distill(objs, text):
  by = {o['model']: o for o in objs if 'val_ppl' in o}
  closed = re.search(r'gap closed by distillation: ([\d.]+%)', text)
  return {'quality': f'val perplexity teacher {by["teacher"]["val_ppl"]:.3f} '
                     f'({_n(by["teacher"]["params"])} params), student from scratch '
                     f'{by["student_scratch"]["val_ppl"]:.3f}, distilled '
                     f'{by["student_distilled"]["val_ppl"]:.3f} '
                     f'({_n(by["student_distilled"]["params"])} params); '
                     f'gap closed {closed.group(1) if closed else "?"}',
          'speed': f'teacher {by["teacher"]["ms_per_step"]} ms/step, student '
                   f'{by["student_scratch"]["ms_per_step"]} ms/step'}


def _compress(objs, text):
  rows = {r['model']: r for r in table_rows(text)}
  base = rows['float32 (original)']
  parts = [f'{k}: {rows[k]["bytes on disk"]} B, ppl {rows[k]["change"]}'
           for k in ('int8', 'int4 g32 symmetric after 200-step QAT',
                     'pruned 50% + 200-step recovery') if k in rows]
  return {'quality': f'float32 {base["bytes on disk"]} B, ppl {base["val perplexity"]}; '
                     + '; '.join(parts),
          'speed': 'forward tokens/s: ' + ', '.join(
              f'{k} {rows[k]["tokens/s (forward)"]}' for k in ('float32 (original)', 'int8')
              if k in rows)}


def _smollm2_ppl(objs, text):
  r = objs[-1]
  genai = re.search(r'genai \(JAX\) perplexity: ([\d.]+)', text)
  ref = re.search(r'transformers \(torch\) perplexity: ([\d.]+)', text)
  rel = re.search(r'relative difference: ([\d.e-]+%)', text)
  q = f'perplexity genai {genai.group(1) if genai else r}'
  if ref:
    q += f', transformers {ref.group(1)} (relative difference {rel.group(1)})'
  return {'quality': q}


def _smollm2_inference(objs, text):
  rows = [o for o in objs if 'genai_tok_s' in o]
  return {'speed': '; '.join(
      f'batch {r["batch"]}: {r["genai_tok_s"]} tokens/s vs transformers '
      f'{r["transformers_tok_s"]} ({r["genai_tok_s"] / r["transformers_tok_s"]:.2f}x)'
      for r in rows)}


def _smollm2_quantize(objs, text):
  rows = [o for o in objs if 'ppl_change_pct' in o]
  return {'quality': '; '.join(f'{r["model"]}: ppl {r["ppl"]} ({r["ppl_change_pct"]:+.2f}%), '
                               f'{r["kernel_bytes"] / 2**20:.1f} MiB' for r in rows)}


def _smollm2_finetune(objs, text):
  rows = [o for o in objs if 'val_ppl_after' in o]
  return {'quality': '; '.join(f'{r["mode"]}: val ppl {r["val_ppl_before"]} -> '
                               f'{r["val_ppl_after"]}' for r in rows),
          'speed': '; '.join(f'{r["mode"]}: {r["train_tokens_per_s"]} tokens/s, '
                             f'{r["ms_per_step"]:,.0f} ms/step' for r in rows),
          'memory': '; '.join(f'{r["mode"]}: {r["peak_rss_gb"]} GB' for r in rows)}


def _vae(objs, text):
  r = _pick(objs, test_nelbo_nats=None)
  iw = r.get('test_iw_nll_nats')
  return {'quality': f'test -ELBO {r["test_nelbo_nats"]:.2f} nats'
                     + (f', IW-NLL {iw:.2f} nats (k={r["iw_samples"]})' if iw else ''),
          'speed': f'{r["steps"]:,} steps ({r["epochs"]:.1f} epochs), '
                   f'{r["examples_per_s"]:,.0f} examples/s',
          'memory': f'{r["peak_rss_mb"]:,.0f} MiB'}


def _gan(objs, text):
  r = _pick(objs, fid_samples=None)
  m = r['final_train_metrics']
  losses = ', '.join(f'{k} {v:.3f}' for k, v in sorted(m.items())
                     if k.endswith('loss') and isinstance(v, float))
  return {'quality': f'{r["steps"]:,} G steps; final {losses}; '
                     f'{r["fid_samples"]["count"]:,} EMA samples for FID',
          'speed': f'{r["examples_per_sec_last_log_window"]:,} examples/s',
          'memory': f'{r["peak_rss_mib"]:,} MiB'}


def _diffusion(objs, text):
  r = _pick(objs, final_eval_loss_ema=None)
  s = r['sampling']
  return {'quality': f'{r["steps"]:,} steps; held-out loss (EMA) '
                     f'{r["final_eval_loss_ema"]:.4f}; {s["num_samples"]:,} samples',
          'speed': f'{r["examples_per_sec"]:,} examples/s training; {s["sampler"]}-'
                   f'{s["steps"]} sampling {s["ms_per_image"]} ms/image',
          'memory': f'{r["peak_rss_mib"]:,} MiB'}


def _diffusion_step(objs, text):
  r = _pick(objs, train_step_ms_best=None)
  return {'speed': f'train step {r["train_step_ms_best"]} ms (batch {r["batch_size"]}, best; '
                   f'median {r["train_step_ms_median"]}), forward {r["forward_ms_batch500"]} '
                   f'ms per 500 images; {r["params_millions"]}M params'}


def _inception(objs, text):
  r = objs[-1]
  rates = [(m.group(1), int(m.group(2)), v) for k, v in r.items()
           if (m := re.fullmatch(r'(jax|torch)_b(\d+)', k))]
  return {'speed': ', '.join(f'{"JAX" if impl == "jax" else "PyTorch"} {v} images/s (batch {b})'
                             for impl, b, v in rates) + f' on {r["input"]} images'}


def _fid(objs, text):
  r = _pick(objs, fid=None)
  return {'quality': f'FID {r["fid"]:.2f}, KID x 100 {100 * r["kid_mean"]:.2f} +- '
                     f'{100 * r["kid_std"]:.2f}, precision {r["precision"]:.2f}, recall '
                     f'{r["recall"]:.2f} ({r["n_samples"]:,} samples vs {r["n_ref"]:,} '
                     f'{r["ref"].split("@")[0]} {r["ref"].rsplit(":", 1)[-1]} images, '
                     f'{r["feature_extractor"]})'}


def _serve_decode(objs, text):
  r = objs[-1]
  return {'speed': f'server (HTTP) {r["genai_server_batch1"]:.0f} / {r["genai_server_batch8"]:.0f}'
                   f' new tokens/s at batch 1 / 8; HF generate {r["hf_generate_batch1"]:.0f} / '
                   f'{r["hf_generate_batch8"]:.0f} ({r["ratio_batch1"]:.2f}x / '
                   f'{r["ratio_batch8"]:.2f}x)'}


def _serve_load(objs, text):
  r = _pick(objs, requests_per_s=None)
  return {'quality': f'{r["errors"]} errors in {r["requests"]} requests',
          'speed': f'{r["requests_per_s"]:.0f} requests/s, {r["tokens_per_s"]:,.0f} tokens/s, '
                   f'latency p50 {1e3 * r["latency_p50_s"]:.0f} ms, p99 '
                   f'{1e3 * r["latency_p99_s"]:.0f} ms ({r["clients"]} clients)'}


def _export(objs, text):
  rows = table_rows(text)
  return {'quality': '; '.join(f'{r["model"]}: max diff {r["diff SavedModel / float / int8"]}'
                               for r in rows if r.get('model') == 'lm'),
          'speed': '; '.join(f'{r["model"]} {r["call"]}: JAX {r["JAX ms"]} ms, TFLite float '
                             f'{r["TFLite float ms"]} / int8 {r["TFLite int8 ms"]} ms'
                             for r in rows),
          'memory': '; '.join(f'{r["model"]}: SavedModel {r["SavedModel MB"]} MB, TFLite '
                              f'{r["TFLite MB float / int8"]} MB' for r in rows)}


def _feedback(objs, text):
  r = _pick(objs, status=None)
  return {'quality': f'capital share {r["capital_share_before"]:.3f} -> '
                     f'{r["capital_share_after"]:.3f} from {r["pairs"]} preference pairs; '
                     f'held-out loss {r["heldout_loss_before"]:.3f} -> '
                     f'{r["heldout_loss_after"]:.3f}; {r["status"]}',
          'speed': f'retrain {r["retrain_wall_s"]:.0f} s wall'}


def _moderation(objs, text):
  rows = re.findall(r'^(rules only|classifier only|rules \+ classifier).*?\s{2,}([\d,]+)\s+[\d.]+$',
                    text, re.M)
  return {'speed': ', '.join(f'{k}: {v} texts/s' for k, v in rows)}


def _gan_args(out_dir, steps):
  return ('-m', 'benchmarks.gan_mnist', '--out_dir', out_dir,
          '--config', f'configs/gan/mnist.py:path={MNIST}', f'--config.train.num_steps={steps}')


def _diffusion_args(out, *extra):
  return ('-m', 'benchmarks.diffusion_mnist', '--out', out,
          '--config', f'configs/diffusion/mnist.py:path={MNIST}', *extra, '--num_samples', '2000')


def _fid_args(samples, *extra):
  return ('-m', 'genai.evaluation.fid', '--samples', samples, '--max_samples', '2000',
          '--ref', 'mnist:test', '--ref_count', '2000', '--data_path', MNIST, *extra)


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark('lm_step_speed', 'language model',
              ('-m', 'benchmarks.lm_step_speed',
               '--config', f'configs/lm/shakespeare_char.py:path={TINY}'),
              'baby char GPT step vs PyTorch eager, 3 rounds x 64 steps', 2,
              (TINY, 'module:torch'), _lm_step_speed),
    Benchmark('lm_train_baby', 'language model',
              ('-m', 'benchmarks.lm_train', '--out', 'runs/bench/lm_train_baby.json',
               '--config', f'configs/lm/shakespeare_char.py:path={TINY}'),
              "nanoGPT's baby recipe, 2,000 steps", 2, (TINY,), _lm_train),
    Benchmark('lm_train_fast', 'language model',
              ('-m', 'benchmarks.lm_train', '--out', 'runs/bench/lm_train_fast.json',
               '--config', f'configs/lm/shakespeare_char_fast.py:path={TINY}'),
              'fast recipe, 1,500 steps (time to val loss 1.89)', 2, (TINY,), _lm_train),
    Benchmark('nanogpt_reference', 'language model',
              ('-m', 'benchmarks.nanogpt_reference', '--data', TINY, '--seeds', '0,1,2,3'),
              "nanoGPT's own baby run in PyTorch (clip 1.0, decay 0.1), seeds 0-3", 5,
              (TINY, 'module:torch'), _nanogpt),
    Benchmark('nanogpt_reference_noclip', 'language model',
              ('-m', 'benchmarks.nanogpt_reference', '--data', TINY, '--seeds', '0,1,2,3',
               '--grad_clip', '0', '--weight_decay', '0'),
              "the same without clipping or decay (genai's baby recipe), seeds 0-3", 5,
              (TINY, 'module:torch'), _nanogpt),
    Benchmark('sharding_scaling', 'language model', ('-m', 'benchmarks.sharding_scaling'),
              '1/2/4/8 fake CPU devices x data/fsdp/tensor, 60 steps each', 4, (),
              _sharding),
    Benchmark('lm_mfu', 'language model', ('-m', 'benchmarks.lm_mfu', '--preset', 'cpu_small'),
              'train-step MFU, 4x256 GPT, block 256, 10 steps', 1, (), _lm_mfu),
    Benchmark('lm_distill', 'compression',
              ('-m', 'benchmarks.lm_distill', '--text', TINY, '--out_dir', 'runs/bench/distill'),
              'teacher, scratch and distilled student, 1,500 steps each', 3, (TINY,),
              _lm_distill),
    Benchmark('compress_report', 'compression',
              ('-m', 'benchmarks.compress_report', '--workdir', 'runs/bench/distill/teacher',
               '--student', 'runs/bench/distill/student_distilled'),
              "int8/int4, pruning, QAT and the student on lm_distill's teacher", 2,
              (TINY,), _compress),
    Benchmark('smollm2_perplexity', 'transfer learning',
              ('benchmarks/smollm2_perplexity.py', '--text', TINY),
              'SmolLM2-135M perplexity, genai vs transformers, 512 tokens', 1,
              (TINY, 'smollm2', 'module:transformers'), _smollm2_ppl),
    Benchmark('smollm2_inference', 'transfer learning', ('-m', 'benchmarks.smollm2_inference',
                                                         '--text', TINY),
              'SmolLM2-135M greedy decoding, batch 1 and 8, vs transformers', 2,
              (TINY, 'smollm2', 'module:transformers'), _smollm2_inference),
    Benchmark('smollm2_quantize', 'compression', ('-m', 'benchmarks.smollm2_quantize',
                                                  '--text', TINY),
              'SmolLM2-135M int8/int4 weights, perplexity change', 1, (TINY, 'smollm2'),
              _smollm2_quantize),
    Benchmark('smollm2_finetune', 'transfer learning',
              ('-m', 'benchmarks.smollm2_finetune', '--steps', '40', '--text', TINY),
              'SmolLM2-135M full and LoRA fine-tunes, 40 steps each', 15, (TINY, 'smollm2'),
              _smollm2_finetune),
    Benchmark('vae_mnist', 'image', ('-m', 'benchmarks.vae_mnist', '--budget_s', '1200',
                                     '--data', MNIST),
              'conv VAE on binarised MNIST, 1,200 s wall budget', 22, (MNIST,), _vae),
    Benchmark('gan_mnist', 'image', _gan_args('runs/bench/gan_mnist', 3000),
              'DCGAN, 3,000 generator steps, 10,000 EMA samples', 10, (MNIST,), _gan),
    Benchmark('diffusion_mnist', 'image', _diffusion_args('runs/bench/diffusion_mnist'),
              'UNet diffusion, 3,000 steps, 2,000 DDIM-50 samples', 10, (MNIST,), _diffusion),
    Benchmark('gan_mnist_10k', 'image', _gan_args('runs/bench/gan_mnist_10k', 10000),
              'the same DCGAN, 10,000 generator steps (how FID moves with training)', 33,
              (MNIST,), _gan),
    Benchmark('diffusion_mnist_10k', 'image',
              _diffusion_args('runs/bench/diffusion_mnist_10k', '--config.train.num_steps=10000'),
              'the same UNet diffusion, 10,000 steps, 2,000 DDIM-50 samples', 30, (MNIST,),
              _diffusion),
    Benchmark('diffusion_step_speed', 'image',
              ('-m', 'benchmarks.diffusion_step_speed',
               '--config', f'configs/diffusion/mnist.py:path={MNIST}'),
              'diffusion UNet train step and forward, 5 timed steps', 1, (MNIST,),
              _diffusion_step),
    Benchmark('inception_speed', 'image evaluation',
              ('-m', 'benchmarks.inception_speed', '--batch_sizes=50', '--num_images=100',
               '--rounds=1'),
              'FID InceptionV3 images/s, 100 images', 1, (), _inception),
    Benchmark('fid_floor', 'image evaluation',
              _fid_args('mnist:train'),
              'FID/KID/PR of 2,000 real train images (the floor)', 8, (MNIST,), _fid),
    Benchmark('fid_vae', 'image evaluation',
              _fid_args('runs/bench/vae_mnist_samples/fid_samples.npz'),
              'FID/KID/PR of 2,000 VAE samples', 4, (MNIST,), _fid),
    Benchmark('fid_gan', 'image evaluation',
              _fid_args('runs/bench/gan_mnist/ema_samples.npz'),
              'FID/KID/PR of 2,000 GAN EMA samples', 4, (MNIST,), _fid),
    Benchmark('fid_diffusion', 'image evaluation',
              _fid_args('runs/bench/diffusion_mnist/samples.npz'),
              'FID/KID/PR of 2,000 diffusion samples', 4, (MNIST,), _fid),
    Benchmark('fid_gan_10k', 'image evaluation',
              _fid_args('runs/bench/gan_mnist_10k/ema_samples.npz'),
              'FID/KID/PR of 2,000 EMA samples of the 10,000-step GAN', 4, (MNIST,), _fid),
    Benchmark('fid_diffusion_10k', 'image evaluation',
              _fid_args('runs/bench/diffusion_mnist_10k/samples.npz'),
              'FID/KID/PR of 2,000 samples of the 10,000-step diffusion model', 4, (MNIST,),
              _fid),
    Benchmark('serve_decode', 'serving', ('-m', 'benchmarks.serve_decode'),
              'server decode tokens/s over HTTP vs HF generate, 200 tokens, batch 1 and 8', 1,
              ('module:transformers',), _serve_decode),
    Benchmark('serve_load', 'serving', ('-m', 'benchmarks.serve_load', '--data', TINY),
              '32 clients, 320 requests on the Tiny Shakespeare model', 2, (TINY,),
              _serve_load),
    Benchmark('export_report', 'export', ('-m', 'benchmarks.export_report',),
              'SavedModel and TFLite size, latency and parity, 4 models', 1, (), _export),
    Benchmark('feedback_round', 'continuous learning',
              ('-m', 'benchmarks.feedback_round', '--data', TINY),
              'one serve -> feedback -> DPO retrain -> promote round', 2, (TINY,), _feedback),
    Benchmark('moderation_throughput', 'safety', ('-m', 'benchmarks.moderation_throughput',),
              'rules and classifier texts/s on 10,000 texts', 1, (), _moderation),
)
_BY_NAME = {b.name: b for b in BENCHMARKS}


# ---- running ---------------------------------------------------------------------------------


def machine_info() -> dict:
  """What the figures depend on: CPU, cores, memory, accelerator, library versions."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  try:
    mem_gib = round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)
  except (ValueError, OSError, AttributeError):
    mem_gib = None
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  info = {'cpu': f'{cpu} ({platform.machine()})', 'cores': os.cpu_count(), 'memory_gib': mem_gib,
          'accelerator': f'{len(devices)} x {devices[0].device_kind} ({devices[0].platform})',
          'jax': jax.__version__, 'python': platform.python_version()}
  for pkg in ('flax', 'torch'):
    try:
      info[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      pass
  return info


def _git(*args):
  try:
    return subprocess.run(['git', *args], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return ''


def commit() -> str:
  """The short commit, '+changes' when tracked files other than Markdown and results differ."""
  head = _git('rev-parse', '--short', 'HEAD').strip() or 'unknown'
  changed = [ln for ln in _git('status', '--porcelain', '--untracked-files=no').splitlines()
             if not (ln[3:].startswith('benchmarks/results/') or ln.endswith('.md'))]
  return head + ('+changes' if changed else '')


def missing_needs(bench: Benchmark, data_dir: str) -> list[str]:
  """What `bench` needs that this machine lacks, each with the command that provides it."""
  out = []
  for need in bench.needs:
    if need.startswith('module:'):
      mod = need.split(':', 1)[1]
      if importlib.util.find_spec(mod) is None:
        out.append(f'{mod} (pip install -e ".[reference]")')
    elif need == 'smollm2':
      from genai.pretrained import fetch  # pylint: disable=g-import-not-at-top
      if not fetch.smollm2_cache_path().is_file():
        out.append('SmolLM2 (python -m genai.pretrained.fetch smollm2)')
    elif not os.path.exists(need.replace('{data}', data_dir)):
      out.append(need.replace('{data}', data_dir))
  return out


def clean_stdout(text: str) -> str:
  lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and not _NOISE.match(ln)]
  return '\n'.join(lines[-_TRANSCRIPT_LINES:])


def run_benchmark(bench: Benchmark, results_dir: str, data_dir: str,
                  python: str = sys.executable, note: str = '') -> dict:
  """Runs one script, stores its result file and returns it; raises on failure."""
  argv = [python, *(a.replace('{data}', data_dir) for a in bench.args)]
  shown = shlex.join(['python', *argv[1:]])
  # A fresh parent per script, so the peak RSS is this script's (ru_maxrss of the children
  # only grows over a process's life).
  wrapper = ('import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); '
             'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); '
             'sys.exit(p.returncode)')
  # Output goes to files as it comes (`tail -f runs/bench/report/NAME.log` to watch).
  logs = os.path.join('runs', 'bench', 'report')
  os.makedirs(logs, exist_ok=True)
  out_path = os.path.join(logs, f'{bench.name}.log')
  err_path = os.path.join(logs, f'{bench.name}.err')
  started, code = datetime.datetime.now(datetime.timezone.utc), commit()
  t0 = time.perf_counter()
  with open(out_path, 'w') as out, open(err_path, 'w') as err:
    out.write(f'$ {shown}\n')
    out.flush()
    proc = subprocess.run([python, '-c', wrapper, *argv], stdout=out, stderr=err, check=False)
  wall = time.perf_counter() - t0
  with open(out_path) as f:
    raw_stdout = f.read().split('\n', 1)[1]
  with open(err_path) as f:
    stderr_lines = f.read().rstrip().splitlines()
  peak_kib = int(stderr_lines[-1]) if stderr_lines and stderr_lines[-1].isdigit() else None
  stdout = clean_stdout(raw_stdout)
  result = {'name': bench.name, 'command': shown, 'budget': bench.budget,
            'commit': code, 'date': started.strftime('%Y-%m-%d %H:%M UTC'),
            'wall_s': round(wall, 1), 'returncode': proc.returncode,
            'peak_rss_mib': None if peak_kib is None else round(peak_kib / 1024),
            'machine': machine_info(), 'note': note, 'stdout': stdout}
  failure = f'exit status {proc.returncode}' if proc.returncode else None
  if failure is None:
    try:
      bench.headline(json_objects(stdout), stdout)
    except Exception as e:  # pylint: disable=broad-except
      failure = f'its output has no headline figures ({type(e).__name__}: {e})'
  if failure:
    raise RuntimeError(f'{bench.name} failed: {failure}; the previous result is kept; output in '
                       f'{out_path} and {err_path}')
  os.makedirs(results_dir, exist_ok=True)
  path = os.path.join(results_dir, f'{bench.name}.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(result, f, indent=1)
    f.write('\n')
  os.replace(path + '.tmp', path)
  return result


def load_results(results_dir: str) -> dict[str, dict]:
  out = {}
  for name in _BY_NAME:
    path = os.path.join(results_dir, f'{name}.json')
    if os.path.exists(path):
      with open(path) as f:
        out[name] = json.load(f)
  return out


# ---- the Markdown ----------------------------------------------------------------------------


def _cell(s) -> str:
  return str(s).replace('|', '\\|').replace('\n', ' ') if s not in (None, '') else ''


def _machine_text(m: dict) -> str:
  extra = ', '.join(f'{k} {m[k]}' for k in ('flax', 'torch') if k in m)
  return (f'{m["cpu"]}, {m["cores"]} cores, {m["memory_gib"]} GiB; {m["accelerator"]}; '
          f'jax {m["jax"]}, Python {m["python"]}' + (f', {extra}' if extra else ''))


def _rounded(x):
  """Floats to 4 significant digits, for reading."""
  if isinstance(x, float):
    return float(f'{x:.4g}')
  if isinstance(x, dict):
    return {k: _rounded(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_rounded(v) for v in x]
  return x


def _minutes(s: float) -> str:
  return f'{s / 60:.1f} min' if s >= 60 else f'{s:.0f} s'


def render(results: dict[str, dict]) -> str:
  """docs/benchmarks.md from the result files (deterministic: same files, same text)."""
  machines: list[str] = []  # distinct machine descriptions, in benchmark order
  machine_id: dict[str, str] = {}  # benchmark name -> 'M1', 'M2', ...
  for name in _BY_NAME:
    if name in results:
      text = _machine_text(results[name]['machine'])
      if text not in machines:
        machines.append(text)
      machine_id[name] = f'M{machines.index(text) + 1}'
  total = sum(b.minutes for b in BENCHMARKS)
  out = [
      '# Benchmarks',
      '',
      'Written by `python -m benchmarks.report` from `benchmarks/results/*.json`; do not '
      'edit by hand. Each row is one run of the script in the command column, as that '
      'command ran, on the machine named. Rerun one with `python -m benchmarks.report --run '
      f'NAME`, or all of them at their stated budgets with `--run all` (about {total / 60:.1f}'
      ' hours on 2 CPU cores). Paths under `../shared/data` are the data a research machine '
      'provides (Tiny Shakespeare, MNIST); `--data_dir` points elsewhere.',
      '',
      'The README discusses these figures against targets and references; figures measured '
      'before this report existed, by hand, stay in the README with their machine.',
      '',
      '## Machines',
      '',
      '| machine | description |',
      '|---|---|',
  ]
  out += [f'| M{i + 1} | {_cell(m)} |' for i, m in enumerate(machines)]
  out += ['', '## Summary', '',
          '| family | benchmark | quality | speed | memory | machine, date, commit | wall |',
          '|---|---|---|---|---|---|---|']
  missing = []
  for b in BENCHMARKS:
    r = results.get(b.name)
    if r is None:
      missing.append(b)
      continue
    h = b.headline(json_objects(r['stdout']), r['stdout'])
    memory = h.get('memory') or (f'{r["peak_rss_mib"]:,} MiB (largest process)'
                                 if r.get('peak_rss_mib') else '')
    where = f'{machine_id[b.name]}, {r["date"][:10]}, {r["commit"]}'
    out.append(f'| {b.family} | [{b.name}](#{b.name}) | {_cell(h.get("quality"))} | '
               f'{_cell(h.get("speed"))} | {_cell(memory)} | {where} | {_minutes(r["wall_s"])} |')
  if missing:
    out += ['', '## Not on record', '',
            'No result file yet; the command that makes one (and its budget):', '']
    for b in missing:
      out.append(f'- `{b.name}` ({b.family}): {b.budget}, about {b.minutes:g} min. '
                 f'`python -m benchmarks.report --run {b.name}`')
  out += ['', '## Details', '']
  for b in BENCHMARKS:
    r = results.get(b.name)
    if r is None:
      continue
    out += [f'### {b.name}', '', f'{b.budget}.', '', '```bash', r['command'], '```', '',
            f'Machine {machine_id[b.name]}, {r["date"]}, commit '
            f'{r["commit"]}, wall {_minutes(r["wall_s"])}'
            + (f', peak RSS {r["peak_rss_mib"]:,} MiB (largest process).'
               if r.get('peak_rss_mib') else '.')
            + (f' Note: {r["note"]}' if r.get('note') else ''), '']
    tables = markdown_tables(r['stdout'])
    if tables:
      for t in tables:
        out += t + ['']
    else:
      objs = json_objects(r['stdout'])
      last = {k: v for k, v in objs[-1].items() if len(json.dumps(v)) <= 300} if objs else None
      body = json.dumps(_rounded(last), indent=1) if last else r['stdout']
      out += ['```', body, '```', '']
  return '\n'.join(out).rstrip() + '\n'


def write_doc(results_dir: str = RESULTS_DIR, doc: str = DOC) -> str:
  text = render(load_results(results_dir))
  os.makedirs(os.path.dirname(doc) or '.', exist_ok=True)
  with open(doc, 'w') as f:
    f.write(text)
  return text


def _select(spec: str, results_dir: str) -> list[Benchmark]:
  if spec == 'all':
    return list(BENCHMARKS)
  if spec == 'missing':
    have = load_results(results_dir)
    return [b for b in BENCHMARKS if b.name not in have]
  names = [n.strip() for n in spec.split(',') if n.strip()]
  unknown = [n for n in names if n not in _BY_NAME]
  if unknown:
    raise SystemExit(f'unknown benchmark(s) {unknown}; choose from {sorted(_BY_NAME)}, '
                     "'all' or 'missing' (python -m benchmarks.report --list)")
  return [b for b in BENCHMARKS if b.name in names]  # list order: dependencies first


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--run', default='', help="comma-separated names, 'all' or 'missing'")
  p.add_argument('--list', action='store_true', help='list the benchmarks and exit')
  p.add_argument('--data_dir', default='../shared/data', help='holds tinyshakespeare/ and mnist/ (relative paths: from the repository root)')
  p.add_argument('--results', default=RESULTS_DIR)
  p.add_argument('--doc', default=DOC)
  p.add_argument('--note', default='', help='stored with each run, e.g. "CI shared the CPU"')
  a = p.parse_args(argv)
  os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # commands' paths
  if a.list:
    have = load_results(a.results)
    for b in BENCHMARKS:
      state = f'on record {have[b.name]["date"]}' if b.name in have else 'not on record'
      print(f'{b.name:24s} {b.family:20s} ~{b.minutes:>4g} min  {state}: {b.budget}')
    return 0
  failed = []
  for b in _select(a.run, a.results) if a.run else []:
    lacking = missing_needs(b, a.data_dir)
    if lacking:
      print(f'skip {b.name}: needs {", ".join(lacking)}', flush=True)
      failed.append(b.name)
      continue
    print(f'run  {b.name} (~{b.minutes:g} min): {b.budget}', flush=True)
    try:
      r = run_benchmark(b, a.results, a.data_dir, note=a.note)
      print(f'     done in {_minutes(r["wall_s"])}', flush=True)
    except RuntimeError as e:
      print(f'     {e}', flush=True)
      failed.append(b.name)
  write_doc(a.results, a.doc)
  print(f'wrote {a.doc}' + (f'; not run: {", ".join(failed)}' if failed else ''))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
