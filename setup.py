"""meta_rewarding: Meta-Rewarding self-improvement of Llama models in JAX."""

import setuptools

setuptools.setup(
    name="meta_rewarding",
    version="0.1.0",
    description="Meta-Rewarding / Self-Rewarding language-model self-improvement in JAX",
    # configs: a config file loaded by path (`--config=configs/tpu_v4.py`) imports configs.common.
    packages=setuptools.find_packages(include=["meta_rewarding", "meta_rewarding.*", "configs",
                                               "xm_launch"]),
    package_data={"meta_rewarding": ["testbed/seed/*"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.6",
        "transformers>=4.45",
        "datasets>=2.20",
        "sentencepiece>=0.2",
        "safetensors>=0.4",
        "tokenizers>=0.19",
        "absl-py>=2.0",
        "ml-collections>=0.1.1",
        "numpy>=1.26",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "etils[epath,epath-gcs]>=1.7",  # epath-gcs: gcsfs, for gs:// workdirs and checkpoints
    ],
    extras_require={
        # torch is pinned: the CPU build of 2.13.0 is what the parity tests and benchmarks compare
        # against; an unpinned torch would pull a multi-GB CUDA build.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0"],
        "bench": ["torch==2.13.0", "trl"],
        # The TPU compiler, for `python -m meta_rewarding.plan --compile_for=v4-32` on any machine
        # (and for running on a TPU VM): jax[tpu] pins the libtpu built for its jax, so this pin
        # moves with the jax the project is tested with. Never in "test": CI needs no libtpu.
        "tpu": ["jax[tpu]==0.10.2"],
        # Resolving unpinned xmanager backtracks for a long time; these pins resolve in about a minute.
        "launch": ["xmanager==0.8.5.post1", "protobuf>=6.33,<7", "google-api-core>=2.44",
                   "google-cloud-aiplatform>=2.7"],
    },
)
