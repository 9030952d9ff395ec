"""`UserError`: the base of every error a user causes and fixes (a config value, a file, a path).

The CLIs (main.py, train_dpo.py) print such an error's message as one `error:` line without a
traceback; anything else is a bug and keeps its traceback. Each subclass also keeps its old base
(mostly ValueError), so code that catches those still catches it. This module imports nothing, so
the light modules (pipeline, stages, artifacts) can depend on it.
"""


class UserError(Exception):
  """A problem in the user's input or environment; the message says what to change."""
