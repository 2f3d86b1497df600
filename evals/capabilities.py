"""Capability groups of the benchmark suite and each task's chance level.

The groups follow the capability analysis this suite serves (and LLaMA's grouping of
these benchmarks): commonsense reasoning, world knowledge, reading comprehension, math,
code, examinations and language modelling. Chance is the score of uniform guessing on the
primary metric: 0 for exact-match generation and greedy matching, None for perplexities.
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
    "humaneval": (CODE, 0.0),
    "mbpp": (CODE, 0.0),
    "mmlu": (EXAMINATION, 0.25),
    "heldout_ppl": (LANGUAGE_MODELING, None),
}


def capability(task: str) -> str:
  if task in TASKS:
    return TASKS[task][0]
  if task.startswith("mmlu_"):
    return EXAMINATION
  raise KeyError(f"no capability group for task {task!r}; add it to evals/capabilities.py")


def chance(task: str) -> float | None:
  if task.startswith("mmlu_"):
    return 0.25
  return TASKS[task][1]
