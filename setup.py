"""genai: a JAX research codebase for generative modelling of text and images."""
from setuptools import find_packages, setup

# One pinned set that installs together and passes `pip check` (see README, "Install").
INSTALL_REQUIRES = [
    'jax==0.10.2',
    'jaxlib==0.10.2',
    'flax==0.12.8',
    'optax==0.2.8',
    'chex==0.1.92',
    'orbax-checkpoint==0.12.8',
    'ml-collections==1.1.0',
    'clu==0.0.12',
    'absl-py==2.5.1',
    'einops==0.8.2',
    'sentencepiece==0.2.3',
    'tiktoken==0.14.0',
    'grain==0.2.18',
    'array_record==0.8.6',
    'tensorflow-datasets==4.9.10',
    # clu's TensorBoard writers and tfds need TensorFlow; the CPU build is enough.
    'tensorflow-cpu==2.21.0; platform_system == "Linux"',
    'tensorflow==2.21.0; platform_system != "Linux"',
    'tensorboard==2.21.0',
    'keras==3.15.1',
    'numpy==2.4.6',
    'ml_dtypes==0.6.0',
    'protobuf==7.36.2',
    'scipy==1.17.1',
    'sacrebleu==2.6.0',
    'scikit-learn==1.9.1',   # embedded image data (load_digits)
    'pillow==13.0.0',
    # Pretrained models: GGUF files (SmolLM2), HF tokenizers, chat templates.
    'gguf==0.19.0',
    'tokenizers==0.23.3',
    'jinja2==3.1.6',
    # Quantization-aware training (genai/compress/qat.py).
    'qwix==0.1.8',
    # Serving (genai/serve) and export (genai/export).
    'fastapi==0.165.0',
    'uvicorn==0.54.0',
    'prometheus_client==0.26.0',
    'orbax-export==0.0.8',
    'ai-edge-litert==2.3.0',
    # Feedback storage (genai/feedback): SQLite by default, any SQLAlchemy URL.
    'sqlalchemy==2.0.44',
    # Plots in the bias-audit reports (genai/safety/audit_report.py).
    'matplotlib==3.10.7',
]

EXTRAS = {
    # playwright drives Debian's `chromium` (apt-get install chromium; no browser download).
    'test': ['pytest==9.2.0', 'httpx==0.28.1', 'schemathesis==4.32.5', 'playwright==1.65.2',
             # colab/ notebooks executed in CI (tests/colab)
             'nbclient==0.11.0', 'nbformat==5.11.1', 'ipykernel==7.4.0'],
    # PyTorch references for parity tests and speed comparisons (CPU build).
    'reference': ['torch==2.13.0', 'transformers==5.24.0', 'accelerate==1.15.0',
                  'safetensors==0.8.0'],
}

setup(
    name='genai',
    version='0.1.0',
    description='A JAX research codebase for generative AI: text and image models, one loop.',
    packages=find_packages(include=['genai', 'genai.*']),
    package_data={'genai.serve': ['static/*.html'], 'genai.safety': ['data/*']},
    python_requires='>=3.11',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
