"""One benchmark report for every family: run the scripts, or render what they last wrote.

  python -m benchmarks.report                        # rewrite docs/benchmarks.md from the results
  python -m benchmarks.report --list                 # the benchmarks, their budgets, what is on record
  python -m benchmarks.report --run lm_train_fast,serve_load    # rerun these, then rewrite
  python -m benchmarks.report --run missing          # everything with no result on record
  python -m benchmarks.report --run all              # every benchmark at its stated budget

Every script writes its own result file, `benchmarks/results/<name>.json`, in the one schema
of `benchmarks/results.py` (command, commit, machine, start, wall time, peak RSS, headline,
figures, tables). `--run` runs each script in its own process with $GENAI_BENCH_RESULTS_DIR
set to a staging folder and its output in `runs/bench/report/<name>.log` and `.err`; a
result file replaces the one on record only when the script exits 0 and the file is valid,
so a failed run keeps the previous result. The Markdown is a pure function of the result
files (`render`), and a test checks `docs/benchmarks.md` against them. `BENCHMARKS` is all
this module knows of each benchmark: its command, budget and what it needs. Scripts run in
list order: `compress_report` reads the workdirs `lm_distill` wrote, and the FID rows read
the samples the image benchmarks wrote.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from benchmarks import results as results_lib

RESULTS_DIR = results_lib.RESULTS_DIR
DOC = 'docs/benchmarks.md'
TINY = '{data}/tinyshakespeare/input.txt'
MNIST = '{data}/mnist'


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """One script at its stated budget; `{data}` in the command is --data_dir."""
  name: str  # the result file's stem: the script's name, or its --result_name
  family: str
  command: str
  budget: str  # what the script is asked to do
  minutes: float  # about how long that takes on 2 CPU cores
  needs: tuple[str, ...] = ()  # paths ({data}/...), 'module:NAME', or 'smollm2' (the cache)


def _gan(name, steps):
  return (f'python -m benchmarks.gan_mnist --result_name {name} --out_dir runs/bench/{name} '
          f'--config configs/gan/mnist.py:path={MNIST} --config.train.num_steps={steps}')


def _diffusion(name, *extra):
  return ' '.join([f'python -m benchmarks.diffusion_mnist --result_name {name} --out '
                   f'runs/bench/{name} --config configs/diffusion/mnist.py:path={MNIST}', *extra,
                   '--num_samples 2000'])


def _fid(name, samples):
  return (f'python -m benchmarks.fid_score --result_name {name} --samples {samples} '
          f'--max_samples 2000 --ref mnist:test --ref_count 2000 --data_path {MNIST}')


def _fid_budget(name, family, run, args):
  """An issue-26 run of image_fid_budget on runs/i26/<run> and its log."""
  return (f'python -m benchmarks.image_fid_budget --family {family} --workdir runs/i26/{run} '
          f'--train_log runs/i26/{run}.log {args} --result_name {name}')


_LM, _IMAGE, _EVAL = 'language model', 'image', 'image evaluation'
BENCHMARKS = tuple(Benchmark(*row) for row in (
    ('lm_step_speed', _LM, 'python -m benchmarks.lm_step_speed '
     f'--config configs/lm/shakespeare_char.py:path={TINY}',
     'baby char GPT step vs PyTorch eager, 3 rounds x 64 steps', 2, (TINY, 'module:torch')),
    ('lm_step_speed_bf16', _LM, 'python -m benchmarks.lm_step_speed --result_name '
     f'lm_step_speed_bf16 --bfloat16_too --rounds 2 --config configs/lm/shakespeare_char.py:path={TINY}',
     'the dtype pilot: the baby step with bf16 compute (float32 params) against float32, '
     '2 rounds x 64 steps', 3, (TINY, 'module:torch')),
    ('lm_train_baby', _LM, 'python -m benchmarks.lm_train --result_name lm_train_baby --out '
     f'runs/bench/lm_train_baby.json --config configs/lm/shakespeare_char.py:path={TINY}',
     "nanoGPT's baby recipe, 2,000 steps", 2, (TINY,)),
    ('lm_train_fast', _LM, 'python -m benchmarks.lm_train --result_name lm_train_fast --out '
     f'runs/bench/lm_train_fast.json --config configs/lm/shakespeare_char_fast.py:path={TINY}',
     'fast recipe, 1,500 steps (time to val loss 1.89)', 2, (TINY,)),
    ('lm_step_speed_gpt2_small', _LM, 'python -m benchmarks.lm_step_speed --result_name '
     'lm_step_speed_gpt2_small --steps 3 --rounds 2 --config '
     f'configs/lm/shakespeare_gpt2_bpe.py:path={TINY},ranks={{data}}/gpt2_bpe/gpt2.tiktoken '
     '--config.model.num_layers=12 --config.model.num_heads=12 --config.model.d_model=768 '
     '--config.data.block_size=256 --config.train.batch_size=4 --config.train.steps_per_call=1',
     'GPT-2 small (124M, vocabulary 50,257) step at 4 x 256 tokens vs PyTorch eager, '
     '2 rounds x 3 steps', 6, (TINY, '{data}/gpt2_bpe/gpt2.tiktoken', 'module:torch')),
    ('lm_step_speed_split', _LM, 'python -m benchmarks.lm_step_speed --result_name '
     f'lm_step_speed_split --cpu_devices 2 --config configs/lm/shakespeare_char.py:path={TINY}',
     'the baby step on the host split into 2 CPU devices, on one of them, and PyTorch eager, '
     '3 rounds x 64 steps', 3, (TINY, 'module:torch')),
    ('split_queue_probe', _LM, 'python -m benchmarks.split_queue_probe --data '
     f'{TINY}', 'how many queued 1-step LM calls 2 CPU devices survive: 256 calls waiting every '
     '1, 2, 32, 64, 256, 3 runs each (a hung run ends after 15 s)', 8, (TINY,)),
    ('lm_command_cache', _LM, 'python -m benchmarks.lm_command_cache --steps 2000 '
     f'--config configs/lm/shakespeare_char.py:path={TINY}',
     'the baby command (2,000 steps, its evaluation) start to exit: cold cache, the PyTorch '
     'reference with the same evaluation work, then the cached run', 5, (TINY,)),
    ('nanogpt_reference', _LM, f'python -m benchmarks.nanogpt_reference --data {TINY} '
     '--seeds 0,1,2,3', "nanoGPT's own baby run in PyTorch (clip 1.0, decay 0.1), seeds 0-3", 5,
     (TINY, 'module:torch')),
    ('nanogpt_reference_noclip', _LM, 'python -m benchmarks.nanogpt_reference --result_name '
     f'nanogpt_reference_noclip --data {TINY} --seeds 0,1,2,3 --grad_clip 0 --weight_decay 0',
     "the same without clipping or decay (genai's baby recipe), seeds 0-3", 5,
     (TINY, 'module:torch')),
    ('sharding_scaling', _LM, 'python -m benchmarks.sharding_scaling',
     '1/2/4/8 fake CPU devices x data/fsdp/tensor, 60 steps each', 4),
    ('lm_mfu', _LM, 'python -m benchmarks.lm_mfu --preset cpu_small',
     'train-step MFU, 4x256 GPT, block 256, 10 steps', 1),
    ('gpu_check', _LM, 'python -m benchmarks.gpu_check', 'on a GPU: the bf16, KV-cache, '
     'Inception and sharding tests, then GPT-2-small bf16 tokens/s and MFU, at most 5 min', 5,
     ('/dev/nvidia0',)),
    ('data_at_scale', 'data', 'python -m benchmarks.data_at_scale --sizes 10MB,1GB --batches 3000 '
     '--bpe_mb 200', 'prepared-corpus reader and training peak RSS, preparation MB/s, pipeline '
     'headroom', 10),
    ('data_at_scale_4gb', 'data', 'python -m benchmarks.data_at_scale --sizes 10MB,4GB '
     '--batches 3000 --result_name data_at_scale_4gb', 'the same at 4 GB (peak RSS vs 10 MB)',
     20),
    ('lm_distill', 'compression', f'python -m benchmarks.lm_distill --text {TINY} '
     '--out_dir runs/bench/distill', 'teacher, scratch and distilled student, 1,500 steps each',
     3, (TINY,)),
    ('compress_report', 'compression', 'python -m benchmarks.compress_report --workdir '
     'runs/bench/distill/teacher --student runs/bench/distill/student_distilled',
     "int8/int4, pruning, QAT and the student on lm_distill's teacher", 2, (TINY,)),
    ('smollm2_perplexity', 'transfer learning',
     f'python benchmarks/smollm2_perplexity.py --text {TINY}',
     'SmolLM2-135M perplexity, genai vs transformers, 512 tokens', 1,
     (TINY, 'smollm2', 'module:transformers')),
    ('smollm2_inference', 'transfer learning',
     f'python -m benchmarks.smollm2_inference --text {TINY}',
     'SmolLM2-135M greedy decoding, batch 1 and 8, vs transformers', 2,
     (TINY, 'smollm2', 'module:transformers')),
    ('smollm2_quantize', 'compression', f'python -m benchmarks.smollm2_quantize --text {TINY}',
     'SmolLM2-135M int8/int4 weights, perplexity change', 1, (TINY, 'smollm2')),
    ('smollm2_finetune', 'transfer learning',
     f'python -m benchmarks.smollm2_finetune --steps 40 --text {TINY}',
     'SmolLM2-135M full and LoRA fine-tunes, 40 steps each', 15, (TINY, 'smollm2')),
    ('vae_mnist', _IMAGE, f'python -m benchmarks.vae_mnist --budget_s 1200 --data {MNIST}',
     'conv VAE on binarised MNIST, 1,200 s wall budget', 22, (MNIST,)),
    ('gan_mnist', _IMAGE, _gan('gan_mnist', 3000),
     'DCGAN, 3,000 generator steps, 10,000 EMA samples', 10, (MNIST,)),
    ('diffusion_mnist', _IMAGE, _diffusion('diffusion_mnist'),
     'UNet diffusion, 3,000 steps, 2,000 DDIM-50 samples', 10, (MNIST,)),
    ('gan_mnist_10k', _IMAGE, _gan('gan_mnist_10k', 10000),
     'the same DCGAN, 10,000 generator steps (how FID moves with training)', 33, (MNIST,)),
    ('diffusion_mnist_10k', _IMAGE,
     _diffusion('diffusion_mnist_10k', '--config.train.num_steps=10000'),
     'the same UNet diffusion, 10,000 steps, 2,000 DDIM-50 samples', 30, (MNIST,)),
    ('image_transfer', _IMAGE, 'python -m benchmarks.image_transfer --cases vae,diffusion '
     '--pretrain_steps 400 --steps 200 --eval_every 25',
     'VAE and class-conditional UNet diffusion pretrained on 8x8 digits 0-4, then 200 steps on '
     '5-9 from that start vs from scratch: held-out loss, steps to the scratch loss, '
     'FID-domain of 500 samples', 8),
    ('image_transfer_dit', _IMAGE, 'python -m benchmarks.image_transfer --cases dit '
     '--pretrain_steps 400 --steps 200 --eval_every 25 --result_name image_transfer_dit',
     'class-conditional DiT pretrained on digits 0-4, then 200 steps on 5-9: scratch, full '
     'fine-tune and LoRA rank 8 (loss, steps to the scratch loss, FID-domain)', 6),
    ('image_gpt_mnist', _IMAGE, 'python -m benchmarks.image_gpt_mnist --out_dir '
     f'runs/bench/image_gpt_mnist --config configs/image_gpt/mnist.py:path={MNIST} '
     '--config.train.num_steps=1200 --num_samples 2000',
     'class-conditional GPT over binarised 2x2-pixel tokens, 1,200 steps, 2,000 samples', 30,
     (MNIST,)),
    ('fid_budget_diffusion', _IMAGE, 'python -m benchmarks.image_fid_budget --family '
     'diffusion --workdir runs/i26/diff_fid --config '
     f'configs/diffusion/mnist_fid.py:path={MNIST} --train_minutes 90 --ref_count 2000 '
     '--num_samples 2000 --curve_samples 1000 --curve_features domain:runs/i26/clf '
     '--result_name fid_budget_diffusion',
     'issue 26: the FID-budget diffusion recipe, FID against training minutes (one core)',
     110, (MNIST,)),
    ('fid_budget_gan', _IMAGE, 'python -m benchmarks.image_fid_budget --family gan '
     f'--workdir runs/i26/gan_fid --config configs/gan/mnist_fid.py:path={MNIST} '
     '--train_minutes 90 --ref_count 2000 --num_samples 2000 --curve_samples 1000 '
     '--curve_features domain:runs/i26/clf --result_name fid_budget_gan',
     'issue 26: the FID-budget GAN recipe (hinge, SN, TTUR), FID against training minutes',
     110, (MNIST,)),
    ('fid_budget_diffusion_10k', _IMAGE, _fid_budget(
        'fid_budget_diffusion_10k', 'diffusion', 'diff_fid',
        f'--config configs/diffusion/mnist_fid.py:path={MNIST} --train_minutes 90 '
        '--curve_samples 1000 --curve_features domain:runs/i26/clf --num_samples 10000'),
     "issue 26's protocol: the diffusion recipe trained to 20,000 steps (<= 90 minutes), "
     '10,000 samples vs the 10,000 MNIST test images', 150, (MNIST,)),
    ('fid_budget_gan_fast', _IMAGE, _fid_budget(
        'fid_budget_gan_fast', 'gan', 'gan_fid2',
        '--steps 1000,2000,5000,10000,15000,20000,25000,30000,35060 --curve_samples 1000 '
        '--curve_features domain:runs/i26/clf --ref_count 2000 --num_samples 2000'),
     'the GAN recipe with the faster step (30-35 ms), stopped at 19.5 training minutes: '
     'FID-domain curve and Inception FID at 2k vs 2k', 10, (MNIST,)),
    ('fid_budget_gan_40min', _IMAGE, _fid_budget(
        'fid_budget_gan_40min', 'gan', 'gan_fid2',
        f'--config configs/gan/mnist_fid.py:path={MNIST} --train_minutes 40 --curve_samples 1000 '
        '--curve_features domain:runs/i26/clf --ref_count 2000 --num_samples 2000'),
     'the same GAN run resumed towards 40 training minutes (stopped at 33.6): its last 40 '
     'checkpoints and Inception FID at 2k vs 2k', 45, (MNIST,)),
    ('fid_budget_gan_10k', _IMAGE, _fid_budget(
        'fid_budget_gan_10k', 'gan', 'gan_fid2',
        '--curve_samples 0 --num_samples 10000 --steps 61572'),
     "issue 26's protocol for that GAN run at step 61,572 (33.6 training minutes; the run "
     'trained on, so its checkpoint must still be kept): 10,000 samples vs the 10,000 MNIST '
     'test images', 20, (MNIST,)),
    ('fid_budget_gan_90min', _IMAGE, _fid_budget(
        'fid_budget_gan_90min', 'gan', 'gan_fid2',
        f'--config configs/gan/mnist_fid.py:path={MNIST} --train_minutes 90 --curve_samples 1000 '
        '--curve_features domain:runs/i26/clf --num_samples 10000'),
     "issue 26's GAN run trained on to its 90 minutes (resumable), then 10,000 samples vs "
     'the 10,000 MNIST test images; FID-domain curve over the kept checkpoints', 120, (MNIST,)),
    ('fid_budget_gan_within_90min', _IMAGE, _fid_budget(
        'fid_budget_gan_within_90min', 'gan', 'gan_fid2',
        '--curve_samples 0 --steps 177000 --num_samples 10000'),
     "the same GAN run's last checkpoint inside 90 training minutes (step 177,000, 89.6 "
     'minutes): 10,000 samples vs the 10,000 MNIST test images', 30, (MNIST,)),
    ('fid_budget_diffusion_10k_ddim100', _IMAGE, _fid_budget(
        'fid_budget_diffusion_10k_ddim100', 'diffusion', 'diff_fid',
        f'--config configs/diffusion/mnist_fid.py:path={MNIST} --train_minutes 90 '
        '--curve_samples 1000 --curve_features domain:runs/i26/clf --steps '
        '4000,8000,12000,16000,20000 --sampler ddim --sample_steps 100 --eta 1.0 '
        '--num_samples 10000'),
     "issue 26's diffusion run (85.9 training minutes) sampled with stochastic DDIM (eta 1, "
     '100 steps): 10,000 samples vs the 10,000 MNIST test images', 130, (MNIST,)),
    ('fid_budget_diffusion_2dev', _IMAGE, _fid_budget(
        'fid_budget_diffusion_2dev', 'diffusion', 'diff2c',
        f'--config configs/diffusion/mnist_fid.py:path={MNIST} --train_minutes 90 '
        '--curve_samples 1000 --curve_features domain:runs/i26/clf --steps '
        '8000,16000,24000,32000,40000,48000,52000 --num_samples 10000'),
     "issue 26's diffusion recipe trained on both cores (the host split into 2 CPU devices) "
     'to 52,000 steps, then 10,000 samples (DDIM eta 1, 100 steps) vs the 10,000 MNIST test '
     'images', 120, (MNIST,)),
    ('diffusion_step_speed', _IMAGE, 'python -m benchmarks.diffusion_step_speed '
     f'--config configs/diffusion/mnist.py:path={MNIST}',
     'diffusion UNet train step and forward, 5 timed steps', 1, (MNIST,)),
    ('conv_step_speed', _IMAGE, 'python -m benchmarks.conv_step_speed --xla_flag_sweep '
     f'--data {MNIST}', 'issue 25: the UNet and DCGAN train steps as the commands train them '
     "(one device, convolutions on XLA's Eigen kernels) vs PyTorch eager, interleaved in one "
     'process, 5 rounds x 40 steps; a profile of the UNet step; 10 XLA:CPU settings, 2 rounds '
     'each', 15, (MNIST, 'module:torch')),
    ('conv_step_speed_split', _IMAGE, 'python -m benchmarks.conv_step_speed --cpu_devices=2 '
     f'--result_name conv_step_speed_split --profile=false --data {MNIST}', 'issue 25: the '
     'UNet and DCGAN train steps on the host split into one CPU device per core (YNNPACK '
     'convolutions), on one of its devices, and PyTorch eager, interleaved in one process, '
     '5 rounds x 8 steps', 6, (MNIST, 'module:torch')),
    ('inception_speed', _EVAL, 'python -m benchmarks.inception_speed --batch_sizes=50 '
     '--num_images=100 --rounds=2', 'FID InceptionV3 images/s vs PyTorch, 2 rounds x 100 '
     'images', 1),
    ('fid_floor', _EVAL, _fid('fid_floor', 'mnist:train'),
     'FID/KID/PR of 2,000 real train images (the floor)', 8, (MNIST,)),
    ('fid_vae', _EVAL, _fid('fid_vae', 'runs/bench/vae_mnist_samples/fid_samples.npz'),
     'FID/KID/PR of 2,000 VAE samples', 4, (MNIST,)),
    ('fid_gan', _EVAL, _fid('fid_gan', 'runs/bench/gan_mnist/ema_samples.npz'),
     'FID/KID/PR of 2,000 GAN EMA samples', 4, (MNIST,)),
    ('fid_diffusion', _EVAL, _fid('fid_diffusion', 'runs/bench/diffusion_mnist/samples.npz'),
     'FID/KID/PR of 2,000 diffusion samples', 4, (MNIST,)),
    ('fid_gan_10k', _EVAL, _fid('fid_gan_10k', 'runs/bench/gan_mnist_10k/ema_samples.npz'),
     'FID/KID/PR of 2,000 EMA samples of the 10,000-step GAN', 4, (MNIST,)),
    ('fid_diffusion_10k', _EVAL,
     _fid('fid_diffusion_10k', 'runs/bench/diffusion_mnist_10k/samples.npz'),
     'FID/KID/PR of 2,000 samples of the 10,000-step diffusion model', 4, (MNIST,)),
    ('serve_decode', 'serving', 'python -m benchmarks.serve_decode',
     'server decode tokens/s over HTTP vs HF generate, 200 tokens, batch 1 and 8, '
     'the sides alternating round by round', 1,
     ('module:transformers',)),
    ('serve_load', 'serving', f'python -m benchmarks.serve_load --data {TINY}',
     '32 clients, 320 requests on the Tiny Shakespeare model', 2, (TINY,)),
    ('fid_image_gpt', _EVAL, _fid('fid_image_gpt', 'runs/bench/image_gpt_mnist/samples.npz'),
     'FID/KID/PR of 2,000 image_gpt samples (binary pixels)', 4, (MNIST,)),
    ('fid_binarised_floor', _EVAL,
     _fid('fid_binarised_floor', 'runs/bench/image_gpt_mnist/binarised_train.npz'),
     'FID/KID/PR of 2,000 binarised real train images (the floor for binary pixels)', 4,
     (MNIST,)),
    ('serve_replicas', 'serving', 'python -m benchmarks.serve_replicas --requests 480',
     '1 and 2 API replicas on one PostgreSQL store and one registry, 480 completions + '
     'ratings each, v2 promoted mid-load', 8),
    ('serve_load_smollm2', 'serving',
     'python -m benchmarks.serve_load --pretrained smollm2 --requests 128 --clients 32 '
     '--result_name serve_load_smollm2',
     '32 clients, 128 requests of 16 tokens on SmolLM2-135M (context 256)', 4, ('smollm2',)),
    ('export_report', 'export', 'python -m benchmarks.export_report',
     'SavedModel and TFLite size, latency and parity, 4 models', 1),
    ('feedback_round', 'continuous learning', f'python -m benchmarks.feedback_round --data {TINY}',
     'one serve -> feedback -> DPO retrain -> promote round', 2, (TINY,)),
    ('moderation_throughput', 'safety', 'python -m benchmarks.moderation_throughput',
     'rules and classifier texts/s on 10,000 texts', 1),
    ('bias_mitigation', 'safety', f'python -m benchmarks.bias_mitigation --data {TINY}',
     'the same char GPT without and with each data.mitigation pass (dedup, rebalance, CDA, '
     'all), 600 steps x 2 seeds each: audit gap and held-out loss', 10, (TINY,)),
    ('bias_mitigation_2k', 'safety', 'python -m benchmarks.bias_mitigation --data '
     f'{TINY} --steps 2000 --seeds 0,1,2 --variants none,cda --result_name bias_mitigation_2k '
     '--out_dir runs/bench/bias_mitigation_2k',
     'the same without and with counterfactual augmentation, 2,000 steps x 3 seeds', 8, (TINY,)),
))
_BY_NAME = {b.name: b for b in BENCHMARKS}


# ---- running ---------------------------------------------------------------------------------


def missing_needs(bench: Benchmark, data_dir: str) -> list[str]:
  """What `bench` needs that this machine lacks, each with the command that provides it."""
  out = []
  for need in bench.needs:
    if need.startswith('module:'):
      mod = need.split(':', 1)[1]
      if importlib.util.find_spec(mod) is None:
        out.append(f'{mod} (pip install -e ".[reference]")')
    elif need == 'smollm2':
      from genai.pretrained import fetch  # pylint: disable=import-outside-toplevel
      if not fetch.smollm2_cache_path().is_file():
        out.append('SmolLM2 (python -m genai.pretrained.fetch smollm2)')
    elif not os.path.exists(need.replace('{data}', data_dir)):
      out.append(need.replace('{data}', data_dir))
  return out


def _staged_result(path: str, code: int) -> dict:
  """The result file a run left at `path`; ValueError saying why there is none to keep."""
  if code:
    raise ValueError(f'exit status {code}')
  if not os.path.exists(path):
    raise ValueError(f'it wrote no result file {os.path.basename(path)}')
  result = results_lib.load(path)
  problems = results_lib.validate(result)
  if problems:
    raise ValueError(f'its result file is invalid ({"; ".join(problems)})')
  return result


def run_benchmark(bench: Benchmark, results_dir: str, data_dir: str,
                  python: str = sys.executable, note: str = '') -> dict:
  """Runs one script; stores and returns the result file it wrote. Raises on failure."""
  argv = shlex.split(bench.command.replace('{data}', data_dir))
  logs = os.path.join('runs', 'bench', 'report')  # `tail -f runs/bench/report/NAME.log`
  os.makedirs(logs, exist_ok=True)
  out_path, err_path = (os.path.join(logs, f'{bench.name}.{ext}') for ext in ('log', 'err'))
  with tempfile.TemporaryDirectory() as staging:
    with open(out_path, 'w') as out, open(err_path, 'w') as err:
      out.write(f'$ {shlex.join(argv)}\n')
      out.flush()
      code = subprocess.run([python, *argv[1:]], stdout=out, stderr=err, check=False,
                            env={**os.environ, results_lib.ENV_DIR: staging}).returncode
    try:
      result = _staged_result(os.path.join(staging, f'{bench.name}.json'), code)
    except ValueError as e:
      raise RuntimeError(f'{bench.name} failed: {e}; the previous result is kept; output in '
                         f'{out_path} and {err_path}') from None
  if note:
    result['notes'] = [*result.get('notes', []), f'Run note: {note}']
  results_lib.save(result, results_dir)
  return result


def load_results(results_dir: str) -> dict[str, dict]:
  paths = {b.name: os.path.join(results_dir, f'{b.name}.json') for b in BENCHMARKS}
  return {name: results_lib.load(p) for name, p in paths.items() if os.path.exists(p)}


# ---- the Markdown ----------------------------------------------------------------------------


def _cell(s) -> str:
  return str(s).replace('|', '\\|').replace('\n', ' ') if s not in (None, '') else ''


def _value(x) -> str:
  """A figure for reading: floats to 6 significant digits, the rest as JSON writes them."""
  if isinstance(x, float):
    return str(float(f'{x:.6g}'))
  return x if isinstance(x, str) else json.dumps(x)


def _markdown_table(columns: list, rows: list[list]) -> list[str]:
  return ['| ' + ' | '.join(_cell(c) for c in columns) + ' |', '|' + '---|' * len(columns),
          *('| ' + ' | '.join(_cell(c) for c in row) + ' |' for row in rows)]


def _machine_text(m: dict) -> str:
  versions = ', '.join(f'{label} {m[k]}' for k, label in (
      ('jax', 'jax'), ('jaxlib', 'jaxlib'), ('python', 'Python'), ('flax', 'flax')) if k in m)
  return f'{m["cpu"]}, {m["cores"]} cores, {m["memory_gib"]} GiB; {m["accelerator"]}; {versions}'


def _minutes(s: float) -> str:
  return f'{s / 60:.1f} min' if s >= 60 else f'{s:.0f} s'


def _details(b: Benchmark, r: dict, machine: str) -> list[str]:
  out = [f'### {b.name}', '', f'{b.budget}.', '', '```bash', r['command'], '```', '',
         f'Machine {machine}, {r["started"]}, commit {r["commit"]}, wall {_minutes(r["wall_s"])}'
         + (f', peak RSS {r["peak_rss_mib"]:,} MiB (largest process)' if r['peak_rss_mib'] else '')
         + (f'; PyTorch reference: torch {r["machine"]["torch"]}' if 'torch' in r['machine'] else '')
         + '.', '']
  for note in r.get('notes', []):
    out += [note, '']
  for t in r.get('tables', []):
    out += ([t['title'], ''] if t.get('title') else []) + _markdown_table(t['columns'], t['rows'])
    out += ['']
  figures = _markdown_table(['figure', 'value'], [[k, _value(v)] for k, v in r['figures'].items()])
  if r.get('tables'):  # the tables show them; all of them stay one click away
    return out + ['<details><summary>All figures</summary>', '', *figures, '', '</details>', '']
  return out + figures + ['']


def render(results: dict[str, dict]) -> str:
  """docs/benchmarks.md from the result files (deterministic: same files, same text)."""
  machines: list[str] = []  # distinct machine descriptions, in benchmark order
  for b in BENCHMARKS:
    if b.name in results and _machine_text(results[b.name]['machine']) not in machines:
      machines.append(_machine_text(results[b.name]['machine']))
  machine_id = {name: f'M{machines.index(_machine_text(r["machine"])) + 1}'
                for name, r in results.items() if name in _BY_NAME}
  out = [
      '# Benchmarks',
      '',
      'Written by `python -m benchmarks.report` from `benchmarks/results/*.json`; do not '
      'edit by hand. Each benchmark script writes its own result file (the schema is in '
      '`benchmarks/results.py`): the command as it ran, the commit, the machine, the wall time, '
      'the peak RSS of its largest process, its headline, its figures and tables. Each row is '
      'one run of the script in the command column, on the machine named. Rerun one with '
      '`python -m benchmarks.report --run NAME`, or all of them at their stated budgets with '
      f'`--run all` (about {sum(b.minutes for b in BENCHMARKS) / 60:.1f} hours on 2 CPU '
      'cores). Paths under `../shared/data` are the data a research machine provides (Tiny '
      'Shakespeare, MNIST); `--data_dir` points elsewhere.',
      '',
      'The capability pages of docs/ discuss these figures against targets and references '
      '(docs/running_benchmarks.md says which page holds which); figures measured before this '
      'report existed, by hand, stay on those pages with their machine.',
      '',
      '## Machines',
      '',
      *_markdown_table(['machine', 'description'],
                       [[f'M{i + 1}', m] for i, m in enumerate(machines)]),
      '',
      '## Summary',
      '',
      '| family | benchmark | quality | speed | memory | machine, date, commit | wall |',
      '|---|---|---|---|---|---|---|',
  ]
  for b in BENCHMARKS:
    if b.name in results:
      r = results[b.name]
      h = r['headline']
      memory = h.get('memory') or (f'{r["peak_rss_mib"]:,} MiB (largest process)'
                                   if r['peak_rss_mib'] else '')
      out.append(f'| {b.family} | [{b.name}](#{b.name}) | {_cell(h.get("quality"))} | '
                 f'{_cell(h.get("speed"))} | {_cell(memory)} | {machine_id[b.name]}, '
                 f'{r["started"][:10]}, {r["commit"]} | {_minutes(r["wall_s"])} |')
  missing = [b for b in BENCHMARKS if b.name not in results]
  if missing:
    out += ['', '## Not on record', '',
            'No result file yet; the command that makes one (and its budget):', '']
    out += [f'- `{b.name}` ({b.family}): {b.budget}, about {b.minutes:g} min. '
            f'`python -m benchmarks.report --run {b.name}`' for b in missing]
  out += ['', '## Details', '']
  for b in BENCHMARKS:
    if b.name in results:
      out += _details(b, results[b.name], machine_id[b.name])
  return '\n'.join(out).rstrip() + '\n'


def write_doc(results_dir: str = RESULTS_DIR, doc: str = DOC) -> str:
  text = render(load_results(results_dir))
  os.makedirs(os.path.dirname(doc) or '.', exist_ok=True)
  with open(doc, 'w') as f:
    f.write(text)
  return text


def _select(spec: str, results_dir: str) -> list[Benchmark]:
  if spec in ('all', 'missing'):
    have = load_results(results_dir) if spec == 'missing' else {}
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
  p.add_argument('--data_dir', default='../shared/data', help='holds tinyshakespeare/ and '
                 'mnist/ (relative paths: from the repository root)')
  p.add_argument('--results', default=RESULTS_DIR)
  p.add_argument('--doc', default=DOC)
  p.add_argument('--note', default='', help='added to the notes of each run, e.g. "CI shared '
                 'the CPU"')
  a = p.parse_args(argv)
  os.chdir(results_lib.REPO)  # the commands' paths are relative to the repository root
  if a.list:
    have = load_results(a.results)
    for b in BENCHMARKS:
      state = f'on record {have[b.name]["started"]}' if b.name in have else 'not on record'
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
    t0 = time.perf_counter()
    try:
      run_benchmark(b, a.results, a.data_dir, note=a.note)
      print(f'     done in {_minutes(time.perf_counter() - t0)}', flush=True)
    except RuntimeError as e:
      print(f'     {e}', flush=True)
      failed.append(b.name)
  write_doc(a.results, a.doc)
  print(f'wrote {a.doc}' + (f'; not run: {", ".join(failed)}' if failed else ''))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
