"""Model FLOPs utilisation: achieved training FLOP/s over the devices' peak.

MFU = flops_per_step * steps_per_sec / (num_devices * peak_flops_per_device), with the
model's own FLOP formula (e.g. `TransformerConfig.flops_per_token`, PaLM appendix B:
6N + 12·L·C·T per token, remat recomputation not counted). The peak is dense bf16 from the
vendors' data sheets; set `parallel.peak_flops_per_device` for anything else (float32
runs, other chips, a CPU).
"""
from __future__ import annotations

import jax

# device_kind prefix -> dense bf16 FLOP/s per device (per chip on TPU).
PEAK_BF16_FLOPS = {
    'NVIDIA H200': 989e12,
    'NVIDIA H100': 989e12,   # SXM; the PCIe card is 756e12 (set it in the config).
    'NVIDIA A100': 312e12,
    'NVIDIA L4': 121e12,
    'TPU v6': 918e12,        # Trillium (v6e)
    'TPU v5p': 459e12,
    'TPU v5 lite': 197e12,   # v5e
    'TPU v5e': 197e12,
    'TPU v4': 275e12,
}


def peak_flops_per_device(override: float = 0.0) -> float:
  """`override` if set, else the table's figure for this device kind, else 0 (unknown)."""
  if override:
    return float(override)
  kind = jax.devices()[0].device_kind
  for prefix, flops in PEAK_BF16_FLOPS.items():
    if kind.startswith(prefix):
      return flops
  return 0.0


def mfu(flops_per_step: float, steps_per_sec: float, num_devices: int, peak: float) -> float:
  return flops_per_step * steps_per_sec / (num_devices * peak)
