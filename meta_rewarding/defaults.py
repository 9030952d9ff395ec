"""The method's defaults (DESIGN.md 4.2) as one ml_collections config; config files start here.

Paper scale: 4 iterations of 5000 prompts × 7 responses × 11 judgments, temperature 0.8, top-p 0.95,
rho schedule [0, 0.32, 0.32, 0.4], both pair types in iterations 1–2 and actor pairs only in 3–4,
beta 0.1. Model, data, mesh and training sizes are placeholders each config file sets.
"""

import ml_collections

from meta_rewarding import prompts


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.allow_config_change = False

  c.model = ml_collections.ConfigDict()
  c.model.checkpoint = ""          # a local HF Llama directory; "" = random init from `architecture`
  c.model.tokenizer = ""           # "" = the checkpoint's tokenizer; or a path; or "train:<vocab>"
  c.model.chat_format = "auto"     # auto | llama3 | llama2 | hf | raw
  c.model.architecture = ml_collections.ConfigDict()  # LlamaConfig fields for random init
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.scan_layers = False
  c.model.remat_policy = "none"
  c.model.strict_config = False    # True: refuse unknown keys in the checkpoint's config.json
  c.model.export_hf = True         # each iteration's model as HF safetensors (else orbax params)

  c.data = ml_collections.ConfigDict()
  c.data.prompts = ""              # JSONL / parquet path, "hf:<name>[:<split>]", or "testbed:<n>"
  c.data.field = "prompt"
  c.data.skip_long_prompts = True  # counted in metrics as skipped/long_prompts

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
  c.mesh.distributed = False       # jax.distributed.initialize (multi-host)

  c.sampling = ml_collections.ConfigDict()
  c.sampling.temperature = 0.8
  c.sampling.top_p = 0.95
  c.sampling.top_k = 64            # candidates considered before nucleus filtering
  c.sampling.batch_size = 16
  c.sampling.prompt_buckets = (64, 128, 256, 512, 1024, 2048)
  c.sampling.max_cache_length = 0  # 0 = largest bucket + max_new_tokens

  c.actor = ml_collections.ConfigDict()
  c.actor.num_responses = 7        # K
  c.actor.max_new_tokens = 512

  c.judge = ml_collections.ConfigDict()
  c.judge.num_judgments = 11       # N
  c.judge.max_new_tokens = 256
  c.judge.template = prompts.JUDGE_TEMPLATE

  c.meta_judge = ml_collections.ConfigDict()
  c.meta_judge.enabled = True      # False = the Self-Rewarding baseline
  c.meta_judge.max_new_tokens = 256
  c.meta_judge.template = prompts.META_JUDGE_TEMPLATE
  c.meta_judge.max_chosen_chars = 1200  # judge pairs whose chosen judgment is longer are dropped
  c.meta_judge.elo_l2 = 1e-3
  c.meta_judge.run_when_unused = False  # meta-judge iterations that train on actor pairs only?

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.num_iterations = 4
  c.pipeline.prompts_per_iteration = 5000
  c.pipeline.rho = (0.0, 0.32, 0.32, 0.4)                    # length control, per iteration
  c.pipeline.train_pairs = ("both", "both", "actor", "actor")  # both | actor | judge | none
  c.pipeline.length_unit = "chars"  # response length for length control: chars | tokens
  c.pipeline.chunk_size = 64        # prompts per artifact chunk (the unit of resume)

  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.oracle = ""            # "testbed": add oracle metrics (the synthetic testbed)
  c.evaluate.heldout_tasks = 0      # testbed: evaluate M_0 ... M_T on this many held-out tasks
  c.evaluate.heldout_every_iteration = True  # False: only M_0 and the last iteration's M_T
  return c
