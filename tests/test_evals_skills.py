"""The skills corpus's held-out tasks as registered seqio evaluation tasks."""

import json

import numpy as np
import pytest
import seqio

from evals import skills as eval_skills
from fineline.data import skills
from fineline.evaluation import tasks as task_lib

SMALL = dict(num_documents=1000, num_eval_items=30)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("data") / "skills")
  eval_skills.register_skills_tasks(root, **SMALL)
  yield root
  eval_skills.register_skills_tasks()  # back to the default corpus for later tests


def _examples(name):
  task = seqio.get_mixture_or_task(name)
  return list(task.source.get_dataset(split=task_lib.SPLIT).as_numpy_iterator())


def test_every_skill_has_registered_mc_and_generation_tasks():
  names = eval_skills.task_names()
  assert len(names) >= 10 and len(names) % 2 == 0
  registered = set(seqio.TaskRegistry.names())
  for name in names:
    assert name in registered
  info = task_lib.task_info("skills_addition_mc")
  assert (info.capability, info.chance, info.primary_metric) == ("math", 0.25, "acc")
  info = task_lib.task_info("skills_facts_gen")
  assert (info.capability, info.primary_metric) == ("world_knowledge", "exact_match")
  assert not info.chance  # guessing scores zero (0.0 or None)
  assert task_lib.task_info("skills_agreement_mc").chance == 0.5


def test_registration_does_not_generate_the_corpus(tmp_path):
  eval_skills.register_skills_tasks(str(tmp_path / "never"))
  try:
    assert not (tmp_path / "never").exists()
  finally:
    eval_skills.register_skills_tasks()


def test_multiple_choice_requests_are_the_corpus_items(corpus_dir):
  corpus = skills.ensure_corpus(corpus_dir, **SMALL)
  items = skills.read_items(corpus.tasks["skills_facts_mc"]["path"])
  examples = _examples("skills_facts_mc")
  assert len(examples) == sum(len(it["choices"]) for it in items)
  first = [e for e in examples if json.loads(e["meta"])["doc"] == 0]
  assert [e["context"].decode() for e in first] == [items[0]["context"]] * len(items[0]["choices"])
  assert [e["continuation"].decode() for e in first] == [" " + c for c in items[0]["choices"]]
  assert json.loads(first[0]["meta"])["gold"] == items[0]["gold"]


def test_generation_requests_stop_at_newline_and_score_exact_match(corpus_dir):
  corpus = skills.ensure_corpus(corpus_dir, **SMALL)
  items = skills.read_items(corpus.tasks["skills_addition_gen"]["path"])
  examples = _examples("skills_addition_gen")
  assert len(examples) == len(items)
  assert [e["context"].decode() for e in examples] == [it["context"] for it in items]
  assert all(json.loads(e["until"]) == ["\n"] for e in examples)
  task = seqio.get_mixture_or_task("skills_addition_gen")
  targets = [task.postprocess_fn(e["targets_pretokenized"].decode(), example=e, is_target=True)
             for e in examples]
  # A model that answers half the items right (with the leading space greedy decoding keeps).
  predictions = [" " + it["answer"] if i % 2 == 0 else " 0" for i, it in enumerate(items)]
  (metric_fn,) = task.metric_fns
  result = metric_fn(targets, predictions)
  assert result["exact_match"] == pytest.approx(np.mean([i % 2 == 0 for i in range(len(items))]))
