"""`UserError`: every user-facing error class derives from it and keeps its old base."""

import pytest

from meta_rewarding import (artifacts, checkpoints, config_check, data, plan, recipe_types,
                            sharding, tokenizer, train, train_dpo)
from meta_rewarding.errors import UserError
from meta_rewarding.model.config import UnsupportedConfigError


@pytest.mark.parametrize("error, old_base", [
    (recipe_types.PipelineError, ValueError), (data.DataError, ValueError),
    (checkpoints.CheckpointError, ValueError), (tokenizer.TokenizerError, ValueError),
    (UnsupportedConfigError, ValueError), (sharding.MeshError, ValueError),
    (artifacts.ArtifactError, ValueError), (artifacts.IntegrityError, artifacts.ArtifactError),
    (train.TrainConfigError, ValueError), (train.TrainingDivergedError, RuntimeError),
    (plan.DoesNotFitError, ValueError), (config_check.ConfigError, ValueError),
    (train_dpo.UsageError, ValueError)])
def test_user_errors_share_one_base_and_keep_their_own(error, old_base):
  # The CLIs catch UserError; code that caught the old base (e.g. ValueError) still catches it.
  assert issubclass(error, UserError) and issubclass(error, old_base)
