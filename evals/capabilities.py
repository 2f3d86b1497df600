"""Capability groups of the benchmark suite and each task's chance level.

The groups follow the capability analysis this suite serves (and LLaMA's grouping of
these benchmarks): commonsense reasoning, world knowledge, reading comprehension, math,
code, examinations and language modelling. Chance is the score of uniform guessing on the
primary metric: 0 for exact-match generation and greedy matching, None for perplexities
and where it differs between documents (TruthfulQA).
"""

from __future__ import annotations

COMMONSENSE = "commonsense_reasoning"
WORLD_KNOWLEDGE = "world_knowledge"
READING = "reading_comprehension"
MATH = "math"
CODE = "code"
EXAMINATION = "examination"
LANGUAGE_MODELING = "language_modeling"

GROUPS = (COMMONSENSE, WORLD_KNOWLEDGE, READING, MATH, CODE, EXAMINATION, LANGUAGE_MODELING)

# task → (capability group, chance level of the primary metric)
TASKS: dict[str, tuple[str, float | None]] = {
    "hellaswag": (COMMONSENSE, 0.25),
    "piqa": (COMMONSENSE, 0.5),
    "winogrande": (COMMONSENSE, 0.5),
    "arc_easy": (COMMONSENSE, 0.25),
    "arc_challenge": (COMMONSENSE, 0.25),
    "openbookqa": (COMMONSENSE, 0.25),
    "sciq": (WORLD_KNOWLEDGE, 0.25),
    "triviaqa": (WORLD_KNOWLEDGE, 0.0),
    "boolq": (READING, 0.5),
    "lambada": (READING, 0.0),
    "gsm8k": (MATH, 0.0),
    "mmlu": (EXAMINATION, 0.25),
    "ceval": (EXAMINATION, 0.25),
    "cmmlu": (EXAMINATION, 0.25),
    "social_iqa": (COMMONSENSE, 1 / 3),
    "commonsense_qa": (COMMONSENSE, 0.2),
    "race": (READING, 0.25),
    "nq_open": (WORLD_KNOWLEDGE, 0.0),
    # TruthfulQA's questions have different numbers of answers, so guessing's score depends
    # on the documents evaluated: the metrics report it as `acc_chance` instead.
    "truthfulqa_mc1": (WORLD_KNOWLEDGE, None),
    "truthfulqa_mc2": (WORLD_KNOWLEDGE, None),
    "minerva_math": (MATH, 0.0),
    "heldout_ppl": (LANGUAGE_MODELING, None),
}
# Subtasks of a subject-grouped task: prefix → the group whose capability and chance apply.
SUBTASK_PREFIXES = {"mmlu_": "mmlu", "ceval_": "ceval", "cmmlu_": "cmmlu",
                    "minerva_math_": "minerva_math"}


def _group_of(task: str) -> str:
  for prefix, group in SUBTASK_PREFIXES.items():
    if task.startswith(prefix):
      return group
  return task


def capability(task: str) -> str:
  if task in TASKS:
    return TASKS[task][0]
  if _group_of(task) in TASKS:
    return TASKS[_group_of(task)][0]
  raise KeyError(f"no capability group for task {task!r}; add it to evals/capabilities.py")


def chance(task: str) -> float | None:
  return TASKS[task][1] if task in TASKS else TASKS[_group_of(task)][1]
