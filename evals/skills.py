"""The held-out tasks of the bundled demo skills corpus (`fineline.data.skills`).

Each skill is registered twice: `skills_<skill>_mc` (log-likelihood multiple choice, acc and
acc_norm) and `skills_<skill>_gen` (greedy generation until "\\n", exact match). Items load
lazily: the corpus is generated on first use, in the directory `ensure_corpus` defaults to
(the same one the demo's training task reads), unless `register_skills_tasks` named another.
"""

from __future__ import annotations

import functools

from evals import registry
from fineline.data import skills
from fineline.data import skills_text

# The longest generation answer (seven copied words) is under 40 tokens of the corpus's
# tokenizer; the bound keeps a model that never emits "\n" cheap to evaluate.
MAX_NEW_TOKENS = 64


def task_names() -> list[str]:
  return sorted(f"{skills.TASK_PREFIX}{skill}_{form}"
                for skill in skills_text.TASKS for form in ("mc", "gen"))


def register_skills_tasks(data_dir: str | None = None, *, seed: int = 0,
                          **corpus_options) -> list[str]:
  """(Re-)registers every skills task over the corpus
  `ensure_corpus(data_dir, seed=seed, **corpus_options)`; returns the task names."""
  corpus = functools.cache(lambda: skills.ensure_corpus(data_dir, seed=seed, **corpus_options))
  for skill, (_, capability, chance) in skills_text.TASKS.items():
    for form in ("mc", "gen"):
      name = f"{skills.TASK_PREFIX}{skill}_{form}"
      load = lambda _, name=name: skills.read_items(corpus().tasks[name]["path"])
      if form == "mc":
        registry.register_multiple_choice_task(name, load, capability, chance=chance)
      else:
        registry.register_generation_task(name, load, capability, until=("\n",),
                                          max_new_tokens=MAX_NEW_TOKENS)
  return task_names()


register_skills_tasks()
