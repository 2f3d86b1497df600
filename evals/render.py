"""Documents → requests exactly as lm-evaluation-harness 0.4.13 renders them.

A `DocTask` describes one benchmark the way an lm-eval task config does (doc_to_text,
doc_to_choice, doc_to_target, description, delimiters, few-shot source and sampler);
`render` turns its documents into the request examples of `fineline.evaluation.tasks`:

  context  = description + k × (text + target_delimiter + answer + fewshot_delimiter) + text
  requests = (context, target_delimiter + choice) per choice   (multiple choice)
           | (context_i, target_delimiter + target) per input   (multiple input: WinoGrande)
           | (context, target) | context until stop sequences   (loglikelihood, generation)

Few-shot examples come from the task's few-shot split, or its fixed samples, through
lm-eval's samplers: "default" draws with `random.Random(1234)` once per document in
document order (drawing k+1 and dropping the document itself when the pool is the
evaluated split, or where lm-eval does so), "first_n" takes the first k.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Callable, Sequence

from evals import sources
from fineline.evaluation import tasks as task_lib

FEWSHOT_SEED = 1234


@dataclasses.dataclass(frozen=True)
class DocTask:
  name: str
  dataset: sources.DatasetSpec | Callable[[str, str], list[dict]]  # or loader(split, data_dir)
  kind: str  # multiple_choice | loglikelihood | loglikelihood_rolling | generate
  doc_to_text: Callable[[dict], Any]
  doc_to_target: Callable[[dict], Any]
  doc_to_choice: Callable[[dict], list[str]] | None = None
  eval_splits: tuple[str, ...] = ("validation",)  # the first one present is evaluated
  fewshot_split: str | None = None  # None: train, else validation, else test
  fewshot_samples: tuple[dict, ...] | None = None
  sampler: str = "default"  # default | first_n
  # lm-eval passes the document to its sampler (which then draws k+1 and drops it) when
  # the config's fewshot split equals its test split, both unset included.
  exclude_eval_doc: bool = True
  process_docs: Callable[[list[dict]], list[dict]] | None = None  # the whole split
  # One document → one, in order (lm-eval's `dataset.map`): applied to only the documents
  # used, so that --limit reads no more of the split than it scores.
  process_doc: Callable[[dict], dict] | None = None
  description: str = ""
  target_delimiter: str = " "
  fewshot_delimiter: str = "\n\n"
  multiple_input: bool = False
  until: tuple[str, ...] = ()
  max_new_tokens: int = 256
  # Extra fields of each request's meta, for metrics that need more of the document than
  # its gold answer (TruthfulQA MC2's labels, MATH's reference solution).
  doc_meta: Callable[[dict], dict] | None = None


def load_docs(task: DocTask, split: str, data_dir: str, limit: int | None = None
              ) -> list[dict]:
  """The split's processed documents, the first `limit` of them when given (read no
  further unless a whole-split `process_docs` needs them all)."""
  read_limit = None if task.process_docs else limit
  if callable(task.dataset):
    docs = task.dataset(split, data_dir)
  else:
    docs = sources.load_split(task.dataset, split, data_dir, task=task.name, limit=read_limit)
  if task.process_docs:
    docs = task.process_docs(docs)
  if limit is not None:
    docs = docs[:limit]
  return [task.process_doc(d) for d in docs] if task.process_doc else docs


def pick_split(task: DocTask, data_dir: str) -> str:
  if callable(task.dataset):
    return task.eval_splits[0]
  present = sources.available_splits(task.dataset, task.eval_splits, data_dir)
  # Absent everywhere: the error names the preferred split.
  return present[0] if present else task.eval_splits[0]


def _pool_split(task: DocTask, eval_split: str, data_dir: str) -> str | None:
  """The split the few-shot pool is drawn from (None: the task's fixed samples): the
  task's few-shot split, else train, else validation, else test, else the evaluated one."""
  if task.fewshot_samples is not None:
    return None
  if task.fewshot_split is not None:
    return task.fewshot_split
  for split in ("train", "validation", "test"):
    if split == eval_split or (not callable(task.dataset) and
                               sources.available_splits(task.dataset, [split], data_dir)):
      return split
  return eval_split


def _fewshot_pool(task: DocTask, eval_split: str, eval_docs, data_dir: str):
  """(pool, must exclude the evaluated document); `eval_docs` are the evaluated split's
  documents, all of them. When train is the designated pool but absent and the fallback
  is the evaluated split itself, each document is kept out of its own shots."""
  if task.fewshot_samples is not None:
    return list(task.fewshot_samples), task.exclude_eval_doc
  split = _pool_split(task, eval_split, data_dir)
  if task.fewshot_split is None and split == eval_split:
    return eval_docs, task.exclude_eval_doc or split != "train"
  return load_docs(task, split, data_dir), task.exclude_eval_doc


class Sampler:
  """lm-eval's ContextSampler / FirstNSampler, one per task evaluation."""

  def __init__(self, pool: list[dict], kind: str, exclude_eval_doc: bool):
    self.pool, self.kind, self.exclude = pool, kind, exclude_eval_doc
    self.rnd = random.Random(FEWSHOT_SEED)

  def sample(self, n: int, doc: dict) -> list[dict]:
    if n == 0:
      return []
    if self.kind == "first_n":
      pool = [d for d in self.pool if d != doc] if self.exclude else self.pool
      if n > len(pool):
        raise ValueError(f"{n} few-shot examples requested, {len(pool)} available")
      return pool[:n]
    if n + self.exclude > len(self.pool):  # the default sampler draws k+1 to drop the doc
      raise ValueError(f"{n} few-shot examples requested; the few-shot pool has "
                       f"{len(self.pool)} documents")
    if not self.exclude:
      return self.rnd.sample(self.pool, n)
    res = [d for d in self.rnd.sample(self.pool, n + 1) if d != doc][:n]
    if len(res) < n:
      res = self.rnd.sample([d for d in self.pool if d != doc], n)
    return res


def _answer_text(choices, answer) -> str:
  if choices and isinstance(answer, int):
    return choices[answer]
  return answer[0] if isinstance(answer, list) else answer


def _has_answer(answer) -> bool:
  return answer is not None and answer != ""


def fewshot_prefix(task: DocTask, shots: Sequence[dict]) -> str:
  parts = [task.description]
  for shot in shots:
    q = task.doc_to_text(shot)
    c = task.doc_to_choice(shot) if task.doc_to_choice else None
    a = task.doc_to_target(shot)
    if task.multiple_input:
      q, c = c[q], None
    if _has_answer(a):
      parts.append(q + task.target_delimiter + _answer_text(c, a) + task.fewshot_delimiter)
    else:
      parts.append(q)
  return "".join(parts)


def render(task: DocTask, settings: task_lib.Settings) -> list[dict]:
  """The request examples of `task` under `settings` (few-shot count, limit, data dir)."""
  data_dir = settings.resolved_data_dir
  split = pick_split(task, data_dir)
  k = task_lib.effective_fewshot(task.name)
  # The whole split is read only when its own documents are the few-shot pool.
  whole = (k > 0 and task.fewshot_samples is None and task.fewshot_split is None
           and _pool_split(task, split, data_dir) == split)
  docs = load_docs(task, split, data_dir, limit=None if whole else settings.limit)
  sampler = None
  if k > 0:
    pool, exclude = _fewshot_pool(task, split, docs, data_dir)
    sampler = Sampler(pool, task.sampler, exclude_eval_doc=exclude)
  if settings.limit is not None:
    docs = docs[:settings.limit]
  examples = []
  for doc_id, doc in enumerate(docs):
    prefix = fewshot_prefix(task, sampler.sample(k, doc) if sampler else [])
    examples.extend(_requests(task, doc_id, doc, prefix, split))
  return examples


def _requests(task: DocTask, doc_id: int, doc: dict, prefix: str, split: str) -> list[dict]:
  requests = _doc_requests(task, doc_id, doc, prefix, split)
  if task.doc_meta:
    extra = task.doc_meta(doc)
    for request in requests:
      request["meta"].update(extra)
  return requests


def _doc_requests(task: DocTask, doc_id: int, doc: dict, prefix: str, split: str
                  ) -> list[dict]:
  text, target = task.doc_to_text(doc), task.doc_to_target(doc)
  if task.kind == "multiple_choice":
    choices = task.doc_to_choice(doc)
    if task.multiple_input:  # one context per choice, one shared continuation
      gold, pairs = text, [(prefix + c, task.target_delimiter + target) for c in choices]
    else:
      gold = target if isinstance(target, int) else choices.index(target)
      pairs = [(prefix + text, task.target_delimiter + c) for c in choices]
    return [{"kind": "loglikelihood", "context": ctx, "continuation": cont,
             "target": choices[gold],
             "meta": {"doc": doc_id, "choice": j, "gold": gold, "nchars": len(choices[j]),
                      "nbytes": len(choices[j].encode("utf-8")), "split": split}}
            for j, (ctx, cont) in enumerate(pairs)]
  if task.kind == "loglikelihood":
    return [{"kind": "loglikelihood", "context": prefix + text, "continuation": target,
             "target": target, "meta": {"doc": doc_id, "split": split}}]
  if task.kind == "loglikelihood_rolling":
    return [{"kind": "loglikelihood_rolling", "context": target, "target": target,
             "meta": {"doc": doc_id, "nbytes": len(target.encode("utf-8")),
                      "nwords": len(re.split(r"\s+", target)), "split": split}}]
  if task.kind == "generate":
    answers = target if isinstance(target, list) else [target]
    return [{"kind": "generate", "context": prefix + text, "until": task.until,
             "max_new_tokens": task.max_new_tokens, "target": answers[0] if answers else "",
             "meta": {"doc": doc_id, "answers": answers, "split": split}}]
  raise ValueError(f"task {task.name!r}: unknown kind {task.kind!r}")
