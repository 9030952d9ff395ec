"""The project's benchmarks: decode and DPO-step throughput against transformers / TRL
(`decode`, `decode_fusion`, `dpo_step`, `gpu_figures`), the paired-seed method comparisons on the
synthetic testbed (`testbed`: Meta- vs Self-Rewarding; `ste`: the Self-Taught Evaluator), the
TPU compile check (`tpu_compile`) and the integrity audit's damage cases (`integrity_cases`), with
their shared helpers (`stats`: t intervals, paired bootstrap and verdicts; `machine`: the load
check). Each runs from the repository root as `python -m bench.<name>` (e.g. `python -m
bench.testbed --help`); the results go to bench/results/ (each module's docstring names its file).
"""
