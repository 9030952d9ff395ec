"""The allowed values of every choice-valued config key and flag, defined once.

The config's declarations (`config/declarations.py`) and the range check read them from here, and
so do the modules that act on a value (the mesh builder, the sampler, the trainer, the tokenizer,
the stages, the recipes, the CLIs). This module imports nothing, so any module, however light, can
read it. One list lives elsewhere too: `losses.DPO_LOSS_TYPES`, because losses.py is meant to be
copied into other projects alone (its doc); a test keeps the two equal.
"""

DTYPES = ("float32", "bfloat16", "float16")          # model.dtype, model.param_dtype
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")  # model.remat_policy
CHAT_FORMATS = ("auto", "hf", "llama3", "llama2", "raw")    # model.chat_format
MESH_AXES = ("data", "fsdp", "tensor")               # the keys of mesh.shape, in mesh order
BATCHING = ("continuous", "static")                  # sampling.batching
DECAYS = ("cosine", "linear", "constant")            # train.decay
TRUNCATION_POLICIES = ("skip", "truncate_response", "error")  # train.truncation
DPO_LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo")        # train.loss_type
TRAIN_PAIRS = ("both", "actor", "judge", "none")     # an entry of pipeline.train_pairs
LENGTH_UNITS = ("chars", "tokens")                   # pipeline.length_unit
RECIPES = ("meta_rewarding", "ste")                  # recipe (recipes.RECIPES implements each)
DEFAULT_RECIPE = RECIPES[0]
ORACLES = ("", "testbed")                            # evaluate.oracle
META_JUDGE_ORACLES = ("", "verdict", "check")        # meta_judge.testbed_oracle ("" = the model)
JUDGE_PROTOCOLS = ("pairwise", "pointwise")          # evaluate.judge_protocol, judge_eval --protocol
PAIR_ORDERS = ("both", "random")                     # ste.orders, judge_eval --orders
STE_TRAIN_ON = ("iteration", "accumulated")          # ste.train_on
TRAIN_MODES = ("dpo", "sft")                         # train_dpo's mode
