"""genai: a JAX research codebase for generative modelling of text and images.

Requirements are ranges, so that installing genai keeps a JAX (and the rest) that a TPU VM,
a GPU box or a Colab runtime already holds, when it lies in the range. The exact set CI
tests is requirements/ci-constraints.txt (`pip install -c requirements/ci-constraints.txt
-e ".[test,reference]"`, as .ci/run does; regenerate it with `python requirements/lock.py`).

Honesty about the ranges: each lower bound is the version in ci-constraints.txt, on which
the whole test suite runs; the one exception is jax, whose 0.10.1 runs the quick start in
tests/test_install_keeps_jax.py (a venv holding jax/jaxlib 0.10.1), while the suite runs on
0.10.2. Upper bounds are the next release series (next minor below 1.0, next major above),
which nobody has tested yet: they say "expected to work", not "tested".
"""
from setuptools import find_packages, setup

JAX = 'jax>=0.10.1,<0.11'  # jax's own metadata pins the jaxlib that goes with it

INSTALL_REQUIRES = [
    JAX,
    'flax>=0.12.8,<0.13',
    'optax>=0.2.8,<0.3',
    'orbax-checkpoint>=0.12.8,<0.13',
    'ml-collections>=1.1.0,<2',
    'clu>=0.0.12,<0.1',
    'absl-py>=2.5.1,<3',
    'numpy>=2.4.6,<3',
    'ml_dtypes>=0.6.0,<0.7',
    'sentencepiece>=0.2.3,<0.3',
    'tiktoken>=0.14.0,<1',
    'grain>=0.2.18,<0.3',
    'array_record>=0.8.6,<0.9',
    'tensorflow-datasets>=4.9.10,<5',
    # clu's metric writers (every training run) and tfds import TensorFlow; the CPU build is
    # enough (JAX does the compute). clu also needs tensorboard, which TF does not pull in.
    'tensorflow-cpu>=2.21.0,<2.22; platform_system == "Linux"',
    'tensorflow>=2.21.0,<2.22; platform_system != "Linux"',
    'tensorboard>=2.21.0,<2.22',
    'sacrebleu>=2.6.0,<3',
    'scikit-learn>=1.9.1,<2',   # embedded image data (load_digits)
    'pillow>=13.0.0,<14',
    # Pretrained models: GGUF files (SmolLM2), HF tokenizers, chat templates.
    'gguf>=0.19.0,<0.20',
    'tokenizers>=0.23.3,<0.24',
    'jinja2>=3.1.6,<4',
    # Quantization-aware training (genai/compress/qat.py).
    'qwix>=0.1.8,<0.2',
]

# The parts a trainer on a TPU VM does not need. Each one's code says which extra it lacks
# in one line (genai/_extras.py, which names the same extras).
OPTIONAL = {
    # python -m genai.serve: the HTTP API.
    'serve': ['fastapi>=0.165.0,<1', 'uvicorn>=0.54.0,<1', 'prometheus_client>=0.26.0,<1'],
    # python -m genai.export: SavedModel (orbax-export over jax2tf) and TFLite.
    'export': ['orbax-export>=0.0.8,<0.1', 'ai-edge-litert>=2.3.0,<3'],
    # genai.feedback's store (serve --feedback, experiments.retrain): SQLite, or PostgreSQL
    # through psycopg 3 (its binary build bundles libpq): postgresql+psycopg://...
    'feedback': ['sqlalchemy>=2.0.44,<2.1', 'psycopg[binary]>=3.3.9,<3.4'],
    # gs:// paths through fsspec's gcsfs (EPATH_USE_TF=false; else epath uses TensorFlow's own
    # GCS filesystem, which the core install already has). The tests' fake GCS needs it.
    'gcs': ['gcsfs>=2026.10.1,<2027'],
    # Plots: the bias-audit reports (genai/safety/audit_report.py) and the colab/ notebooks.
    'plots': ['matplotlib>=3.10.7,<4'],
}

EXTRAS = {
    **OPTIONAL,
    'all': sorted({r for reqs in OPTIONAL.values() for r in reqs}),
    # The accelerator builds of the same JAX (jax's own extras; see docs/install.md).
    'tpu': [JAX.replace('jax', 'jax[tpu]', 1)],
    'cuda': [JAX.replace('jax', 'jax[cuda12]', 1)],
    # The tests exercise every optional part. playwright drives Debian's `chromium`
    # (apt-get install chromium; no browser download); nbclient & co. run colab/ notebooks.
    'test': ['pytest>=9.2.0,<10', 'httpx>=0.28.1,<0.29', 'schemathesis>=4.32.5,<5',
             'playwright>=1.65.2,<2', 'nbclient>=0.11.0,<0.12', 'nbformat>=5.11.1,<6',
             'ipykernel>=7.4.0,<8', *sorted({r for reqs in OPTIONAL.values() for r in reqs})],
    # Apache Beam for genai.data.prepare --runner (docs/data_at_scale.md). Not in the CI lock:
    # Beam needs protobuf < 7 and pillow < 13, so install it without the lock's pins.
    'beam': ['apache-beam>=2.77.0,<3'],
    # PyTorch references for parity tests and speed comparisons (CPU build).
    'reference': ['torch>=2.13.0,<2.14', 'transformers>=5.24.0,<6', 'accelerate>=1.15.0,<2',
                  'safetensors>=0.8.0,<0.9'],
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
