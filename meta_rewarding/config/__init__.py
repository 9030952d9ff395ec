"""The config floor: the base configs (`base`), the logical-axis rules (`rules`) and every key's
declaration (`declarations`: default, allowed values, one-line doc), from which both the base
configs and the range check (`meta_rewarding.config_check`) are built.

Imports only ml_collections and light project modules (`choices`, `prompts`, `errors`): loading a
config never starts jax (tests/test_configs.py checks it). The libraries (`sharding`, `train`,
`decode`, `sampling`) never import this package: they take rules and values as arguments.
"""
