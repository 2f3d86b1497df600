"""Capability groups of the benchmark suite and each task's chance level: the one table.

`evals/` registers tasks with these facts and `fineline/analysis` falls back on them for
records that carry no `capability`/`chance`; neither keeps its own copy. The groups follow
the capability analysis this suite serves (LLaMA's grouping of these benchmarks):
commonsense reasoning, world knowledge, reading comprehension, math, code, examinations and
language modelling. Chance is the score of uniform guessing on the primary metric: 1/choices
for multiple choice, 0 for exact-match generation, greedy matching and pass@1, None where
there is no random baseline (perplexities) or it differs per question.

To add a task, add one row to TASKS; a row also covers its subtasks `NAME_…` (mmlu_anatomy).
No JAX here: the analysis imports it.
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

# task (or task family) → (capability group, chance level of the primary metric)
TASKS: dict[str, tuple[str, float | None]] = {
    "hellaswag": (COMMONSENSE, 0.25),
    "piqa": (COMMONSENSE, 0.5),
    "winogrande": (COMMONSENSE, 0.5),
    "arc": (COMMONSENSE, 0.25),  # arc_easy, arc_challenge
    "openbookqa": (COMMONSENSE, 0.25),
    "siqa": (COMMONSENSE, 1 / 3),
    "social_iqa": (COMMONSENSE, 1 / 3),
    "commonsense_qa": (COMMONSENSE, 0.2),
    "copa": (COMMONSENSE, 0.5),
    "sciq": (WORLD_KNOWLEDGE, 0.25),
    "triviaqa": (WORLD_KNOWLEDGE, 0.0),
    "nq_open": (WORLD_KNOWLEDGE, 0.0),
    "truthfulqa": (WORLD_KNOWLEDGE, None),  # choices per question vary; records carry it
    "boolq": (READING, 0.5),
    "lambada": (READING, 0.0),
    "race": (READING, 0.25),
    "gsm8k": (MATH, 0.0),
    "math": (MATH, 0.0),
    "minerva_math": (MATH, 0.0),  # minerva_math_algebra, …
    "humaneval": (CODE, 0.0),
    "mbpp": (CODE, 0.0),
    "mmlu": (EXAMINATION, 0.25),
    "cmmlu": (EXAMINATION, 0.25),
    "ceval": (EXAMINATION, 0.25),
    "heldout_ppl": (LANGUAGE_MODELING, None),
    "wikitext": (LANGUAGE_MODELING, None),
    "pile": (LANGUAGE_MODELING, None),
}


def lookup(task: str) -> tuple[str, float | None] | None:
  """(group, chance) of `task` or of the family it belongs to (`mmlu_anatomy` → `mmlu`)."""
  name = task.lower()
  if name in TASKS:
    return TASKS[name]
  for family in sorted(TASKS, key=len, reverse=True):
    if name.startswith(family) and name[len(family)] in "_-:.":
      return TASKS[family]
  return None


def capability(task: str) -> str:
  found = lookup(task)
  if found is None:
    raise KeyError(f"no capability group for task {task!r}; add a row to "
                   "fineline/capabilities.py TASKS")
  return found[0]


def chance(task: str) -> float | None:
  found = lookup(task)
  if found is None:
    raise KeyError(f"no chance level for task {task!r}; add a row to "
                   "fineline/capabilities.py TASKS")
  return found[1]
