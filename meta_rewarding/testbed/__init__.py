"""The synthetic testbed (docs/design.md#the-synthetic-testbed): task families with checkable answers and an oracle.

Pure Python, cheap to import. ``tasks`` generates and parses instructions; ``oracle`` grades
responses and judgments against the known answers. (The seed-model builder comes later.)
"""

from meta_rewarding.testbed.oracle import (PASS_THRESHOLD, SCORE_CORRECT, SCORE_INVALID,
                                           SCORE_WRONG, actor_accuracy, better_judgment,
                                           extract_answer, is_correct, judge_accuracy,
                                           judgment_agrees, judgment_error, meta_judge_accuracy,
                                           normalize_answer, oracle_score)
from meta_rewarding.testbed.tasks import (FAMILIES, Task, capacity, generate_tasks,
                                          reference_response, task_from_instruction)
