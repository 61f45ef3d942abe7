"""Diffusion (DDPM/DDIM) configs: `digits.py` (embedded 8x8 digits), `mnist.py`."""
