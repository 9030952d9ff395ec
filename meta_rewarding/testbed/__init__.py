"""The synthetic testbed (docs/design.md#the-synthetic-testbed): task families with checkable answers and an oracle.

Pure Python, cheap to import. ``tasks`` generates and parses instructions; ``oracle`` grades
responses and judgments against the known answers. (The seed-model builder comes later.)
"""
