"""Registering evaluation tasks (with fineline, and with seqio once seqio is loaded), and a
small API for simple item files.

`register(doc_task, metric_fn, …)` adds a task (a `seqio.Task` in seqio's registry) whose
examples render the task's documents under the current run settings
(`fineline.evaluation.tasks.use_settings`), and records its capability group and chance
level. Two helpers cover tasks whose items are already prompts:

  register_multiple_choice_task(name, path_or_loader, capability, *, chance=None,
                                num_fewshot=0, metrics=("acc", "acc_norm"),
                                fewshot=None, description="")
      items {"context": str, "choices": [str], "gold": int}; one request per choice,
      (context, " " + choice); acc / acc_norm as lm-eval computes them.

  register_generation_task(name, path_or_loader, capability, *, until=("\\n",),
                           max_new_tokens=256, num_fewshot=0, fewshot=None,
                           ignore_case=False, ignore_punctuation=False, description="")
      items {"context": str, "answer": str | [str]}; greedy generation from the context
      until a stop sequence, exact_match of the stripped generation against any answer.

`path_or_loader` is a JSONL file or a `save_to_disk` directory (a path relative to the data
directory is resolved against it), or a callable `loader(data_dir) -> list[dict]`.
`fewshot` is the same for the few-shot pool (default: the items themselves, each
document excluded from its own shots). Few-shot examples are rendered
"context answer\\n\\n" (the answer being the gold choice or the first answer).

Example (a skill task of the bundled demo corpus):

    from evals import capabilities, registry
    registry.register_multiple_choice_task(
        "skills_arith", lambda d: load_items(d), capabilities.MATH, chance=0.25)
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from evals import metrics as metric_lib
from evals import render, sources
from fineline.evaluation import tasks as task_lib

Loader = str | Callable[[str], list[dict]]


def register(task: render.DocTask, metric_fn, *, capability: str, chance: float | None,
             num_fewshot: int = 0, primary_metric: str = "acc") -> None:
  """Adds `task` to the task registry (replacing a task of the same name)."""
  task_lib.register_task(
      task_lib.RequestTask(task.name, lambda settings: render.render(task, settings),
                           (metric_fn,)),
      task_lib.TaskInfo(task.name, capability, chance, num_fewshot, primary_metric))


def register_group(name: str, subtasks: Sequence[str], *, capability: str,
                   chance: float | None, num_fewshot: int = 0,
                   primary_metric: str = "acc") -> None:
  """A group (a seqio Mixture) whose score is the size-weighted mean of its subtasks (as
  lm-eval's MMLU group)."""
  task_lib.register_group(name, subtasks, task_lib.TaskInfo(name, capability, chance,
                                                            num_fewshot, primary_metric))


def item_loader(path_or_loader: Loader) -> Callable[[str, str], list[dict]]:
  def load(split, data_dir):
    del split
    if callable(path_or_loader):
      return path_or_loader(data_dir)
    path = os.path.join(data_dir, os.path.expanduser(path_or_loader))
    if os.path.isfile(path):
      return sources.read_jsonl(path)
    if os.path.isfile(os.path.join(path, "state.json")):
      return sources.read_saved_dataset(path)
    raise sources.MissingDataError(f"no items at {path} (a JSONL file or save_to_disk dir)")
  return load


def _items_task(name, path_or_loader, fewshot, **kw) -> render.DocTask:
  items = item_loader(path_or_loader)
  if fewshot is None:
    dataset, fewshot_split = items, None
  else:
    shots = item_loader(fewshot)
    dataset = lambda split, data_dir: (shots if split == "fewshot" else items)(split, data_dir)
    fewshot_split = "fewshot"
  return render.DocTask(name=name, dataset=dataset, eval_splits=("eval",),
                        fewshot_split=fewshot_split or "eval", **kw)


def register_multiple_choice_task(name: str, path_or_loader: Loader, capability: str, *,
                                  chance: float | None = None, num_fewshot: int = 0,
                                  metrics: Sequence[str] = ("acc", "acc_norm"),
                                  fewshot: Loader | None = None, description: str = "") -> None:
  names = tuple(metrics)
  task = _items_task(name, path_or_loader, fewshot, kind="multiple_choice",
                     doc_to_text=lambda d: d["context"], doc_to_choice=lambda d: d["choices"],
                     doc_to_target=lambda d: int(d["gold"]), description=description)
  register(task, metric_lib.multiple_choice(names), capability=capability,
           chance=chance, num_fewshot=num_fewshot, primary_metric=names[0])


def register_generation_task(name: str, path_or_loader: Loader, capability: str, *,
                             until: Sequence[str] = ("\n",), max_new_tokens: int = 256,
                             num_fewshot: int = 0, fewshot: Loader | None = None,
                             ignore_case: bool = False, ignore_punctuation: bool = False,
                             description: str = "") -> None:
  def answers(d):
    return list(d["answer"]) if isinstance(d["answer"], (list, tuple)) else [d["answer"]]
  task = _items_task(name, path_or_loader, fewshot, kind="generate",
                     doc_to_text=lambda d: d["context"], doc_to_target=answers,
                     until=tuple(until), max_new_tokens=max_new_tokens,
                     description=description)
  metric_fn = metric_lib.generation({"exact_match": str.strip}, ignore_case=ignore_case,
                                        ignore_punctuation=ignore_punctuation)
  register(task, metric_fn, capability=capability, chance=0.0, num_fewshot=num_fewshot,
           primary_metric="exact_match")
