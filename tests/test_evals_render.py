"""Rendering and scoring of every benchmark family equal lm-evaluation-harness's own.

lm-eval's task objects are built from its installed task configs with the dataset swapped
for the same local JSON files our loaders read; requests must match exactly (contexts,
continuations, stop sequences, few-shot examples and their order), and lm-eval's
process_results/filters on the same model outputs must give our metrics.
"""

import dataclasses
import json
import math
import os
import random

import numpy as np
import pytest
import seqio

from eval_fixtures import SCHEMAS, write_eval_data, write_exam_csvs

from evals import exams, generation, metrics, minerva_math, multiple_choice, perplexity, render
from fineline.evaluation import tasks as task_lib

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.api.metrics import mean_stderr  # noqa: E402
from lm_eval.api.task import ConfigurableTask  # noqa: E402
from lm_eval.tasks._yaml_loader import load_yaml  # noqa: E402

LM_EVAL_CONFIGS = {
    "hellaswag": "hellaswag/hellaswag.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "piqa": "piqa/piqa.yaml",
    "winogrande": "winogrande/default.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "sciq": "sciq/sciq.yaml",
    "mmlu_anatomy": "mmlu/default/mmlu_anatomy.yaml",
    "lambada": "lambada/lambada_openai.yaml",
    "gsm8k": "gsm8k/gsm8k-cot.yaml",
    "triviaqa": "triviaqa/default.yaml",
    "social_iqa": "siqa/siqa.yaml",
    "commonsense_qa": "commonsense_qa/default.yaml",
    "race": "race/race.yaml",
    "nq_open": "nq_open/nq_open.yaml",
    "truthfulqa_mc1": "truthfulqa/truthfulqa_mc1.yaml",
    "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml",
    "minerva_math_algebra": "minerva_math/minerva_math_algebra.yaml",
    "ceval_accountant": "ceval/ceval-valid_accountant.yaml",
    "cmmlu_agronomy": "cmmlu/cmmlu_agronomy.yaml",
}
DOC_TASKS = {t.name: t for t in (*multiple_choice.TASKS, multiple_choice.mmlu_task("anatomy"),
                                 generation.LAMBADA, generation.GSM8K, generation.TRIVIAQA,
                                 generation.NQ_OPEN, minerva_math.math_task("algebra"),
                                 exams.ceval_task("accountant"), exams.cmmlu_task("agronomy"))}
# Where lm-eval reads a task's fixture files: the released CSVs (read by HF datasets' csv
# builder), else <task>/<split>.jsonl.
CSV_FILES = {"ceval_accountant": {"dev": "ceval/dev/accountant_dev.csv",
                                  "val": "ceval/val/accountant_val.csv"},
             "cmmlu_agronomy": {"dev": "cmmlu/dev/agronomy.csv",
                                "test": "cmmlu/test/agronomy.csv"}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return write_exam_csvs(write_eval_data(tmp_path_factory.mktemp("eval_data")))


def lm_eval_task(task, data_dir, num_fewshot, limit=None):
  tasks_dir = os.path.dirname(lm_eval.tasks.__file__)
  cfg = load_yaml(os.path.join(tasks_dir, LM_EVAL_CONFIGS[task]))
  if task in CSV_FILES:
    files = {s: os.path.join(data_dir, f) for s, f in CSV_FILES[task].items()}

    cfg.update(dataset_path="csv", dataset_name=None,
               dataset_kwargs={"data_files": files},
               num_fewshot=num_fewshot)
  else:
    data = "truthfulqa" if task.startswith("truthfulqa") else task
    files = {s: os.path.join(data_dir, data, f"{s}.jsonl") for s in SCHEMAS[data][1]}
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files},
               num_fewshot=num_fewshot)
  t = ConfigurableTask(config=cfg)
  t.set_fewshot_seed(1234)
  t.build_all_requests(limit=limit)
  return t


def ours(task, data_dir, num_fewshot, limit=None):
  settings = task_lib.Settings(data_dir=data_dir, num_fewshot=num_fewshot, limit=limit)
  with task_lib.use_settings(settings):
    return render.render(DOC_TASKS[task], settings)


CASES = [(t, 0) for t in LM_EVAL_CONFIGS] + [
    ("hellaswag", 3), ("arc_easy", 2), ("winogrande", 2), ("boolq", 1), ("sciq", 2),
    ("mmlu_anatomy", 5), ("gsm8k", 8), ("triviaqa", 2), ("lambada", 1), ("piqa", 1),
    ("openbookqa", 1), ("social_iqa", 2), ("commonsense_qa", 3), ("race", 1), ("nq_open", 3),
    ("minerva_math_algebra", 4), ("ceval_accountant", 5), ("cmmlu_agronomy", 5)]


@pytest.mark.parametrize("task,k,limit", [(t, k, None) for t, k in CASES] + [
    ("hellaswag", 0, 3), ("hellaswag", 3, 3), ("arc_easy", 2, 2), ("boolq", 0, 2),
    ("mmlu_anatomy", 5, 2)])
def test_requests_equal_lm_eval(task, k, limit, data_dir):
  """Also with --limit, which reads only the documents it scores."""
  theirs = lm_eval_task(task, data_dir, k, limit)
  mine = ours(task, data_dir, k, limit)
  assert len(mine) == len(theirs.instances) > 0
  for ex, inst in zip(mine, theirs.instances):
    if inst.request_type == "generate_until":
      context, gen_kwargs = inst.arguments
      assert (ex["kind"], ex["context"]) == ("generate", context)
      assert list(ex["until"]) == list(gen_kwargs["until"])
    else:
      assert ex["kind"] == "loglikelihood"
      assert (ex["context"], ex["continuation"]) == inst.arguments
  if k:  # the few-shot examples really are there
    assert mine[0]["context"].count(DOC_TASKS[task].fewshot_delimiter) >= k


def _lm_eval_mean(values):
  return np.mean(values), mean_stderr(values)


@pytest.mark.parametrize("task", ["hellaswag", "arc_easy", "winogrande", "boolq", "piqa",
                                  "mmlu_anatomy", "openbookqa", "sciq", "social_iqa",
                                  "commonsense_qa", "race", "truthfulqa_mc1",
                                  "ceval_accountant", "cmmlu_agronomy"])
def test_multiple_choice_metrics_equal_lm_eval(task, data_dir):
  theirs = lm_eval_task(task, data_dir, 0)
  mine = ours(task, data_dir, 0)
  rng = np.random.default_rng(0)
  scores = [(float(rng.normal(-8, 3)), bool(rng.random() < 0.3)) for _ in mine]
  by_doc = {}
  for inst, score in zip(theirs.instances, scores):
    by_doc.setdefault(inst.doc_id, (inst.doc, []))[1].append(score)
  per_doc = [theirs.process_results(doc, results) for doc, results in by_doc.values()]
  targets = _targets(mine)
  names = multiple_choice.METRICS.get(task, ("acc", "acc_norm"))
  if task.startswith("mmlu"):
    names = ("acc",)
  if task.startswith(("ceval", "cmmlu")):
    names = ("acc", "acc_norm")
  got = seqio.get_mixture_or_task(task).metric_fns[0](targets,
                                                      np.array(scores, dtype=np.float64))
  assert got["n"] == len(by_doc)
  for name in names:
    mean, stderr = _lm_eval_mean([r[name] for r in per_doc])
    assert got[name] == pytest.approx(mean, abs=1e-12)
    assert got[f"{name}_stderr"] == pytest.approx(stderr, abs=1e-12)
  assert set(names) <= set(per_doc[0])  # lm-eval's config reports these metrics


def test_truthfulqa_mc2_equals_lm_eval(data_dir):
  theirs = lm_eval_task("truthfulqa_mc2", data_dir, 0)
  mine = ours("truthfulqa_mc2", data_dir, 0)
  rng = np.random.default_rng(1)
  scores = [(float(rng.normal(-12, 4)), False) for _ in mine]
  by_doc = {}
  for inst, score in zip(theirs.instances, scores):
    by_doc.setdefault(inst.doc_id, (inst.doc, []))[1].append(score)
  values = [theirs.process_results(doc, results)["acc"] for doc, results in by_doc.values()]
  got = seqio.get_mixture_or_task("truthfulqa_mc2").metric_fns[0](
      _targets(mine), np.array(scores, dtype=np.float64))
  assert 0 < got["acc"] < 1 and got["n"] == len(values)
  assert got["acc"] == pytest.approx(np.mean(values), abs=1e-12)
  assert got["acc_stderr"] == pytest.approx(mean_stderr(values), abs=1e-12)
  docs = [doc for doc, _ in by_doc.values()]
  assert got["acc_chance"] == pytest.approx(np.mean(
      [np.mean(d["mc2_targets"]["labels"]) for d in docs]))


def _targets(mine):
  return [task_lib.postprocess(ex["target"], {"meta": json.dumps(ex["meta"])}, is_target=True)
          for ex in mine]


def test_lambada_metrics_equal_lm_eval(data_dir):
  theirs = lm_eval_task("lambada", data_dir, 0)
  mine = ours("lambada", data_dir, 0)
  rng = random.Random(0)
  scores = [(rng.uniform(-12, -0.5), rng.random() < 0.4) for _ in mine]
  per_doc = [theirs.process_results(inst.doc, [s]) for inst, s in zip(theirs.instances, scores)]
  got = metrics.loglikelihood(_targets(mine), np.array(scores, dtype=np.float64))
  assert got["acc"] == pytest.approx(np.mean([r["acc"] for r in per_doc]), abs=1e-12)
  # lm-eval's perplexity aggregation: exp(-mean(loglikelihood))
  assert got["perplexity"] == pytest.approx(
      math.exp(-np.mean([r["perplexity"] for r in per_doc])), rel=1e-12)


def _generations(task, docs):
  rng = random.Random(1)
  out = []
  for i, doc in enumerate(docs):
    if task == "gsm8k":
      gold = doc["answer"].split("####")[-1].strip()
      out.append([
          f" So {gold} in all. The answer is {gold}.", f" It is ${gold}.00 then",
          f" The answer is {int(gold.replace(',', '')) + 1}.", " I do not know.",
          f" Adding gives {gold}.\n\n"][i % 5])
    elif task == "nq_open":
      answer = doc["answer"][rng.randrange(len(doc["answer"]))]
      out.append([f" {answer}", f" {answer.upper()}!", " nothing", f" the  {answer}",
                  f"An {answer}"][i % 5])
    else:
      alias = doc["answer"]["aliases"][rng.randrange(3)]
      out.append([f" {alias}", f" {alias.upper()}!", " nothing", f"  {alias}\n"][i % 4])
  return out


@pytest.mark.parametrize("task,k", [("gsm8k", 8), ("triviaqa", 0), ("nq_open", 0)])
def test_generation_metrics_equal_lm_eval(task, k, data_dir):
  theirs = lm_eval_task(task, data_dir, k)
  mine = ours(task, data_dir, k)
  texts = _generations(task, [inst.doc for inst in theirs.instances])
  for inst, text in zip(theirs.instances, texts):
    inst.resps = [text]
  theirs.apply_filters()
  ours_metric = {"gsm8k": {"strict-match": "exact_match",
                           "flexible-extract": "exact_match_flexible"},
                 "triviaqa": {"remove_whitespace": "exact_match"},
                 "nq_open": {"remove_whitespace": "exact_match"}}[task]
  task_obj = seqio.get_mixture_or_task(task)
  got = task_obj.metric_fns[0](_targets(mine), texts)
  for filter_name, name in ours_metric.items():
    per_doc = [theirs.process_results(inst.doc, [inst.filtered_resps[filter_name]])
               for inst in theirs.instances]
    values = [r["exact_match"] for r in per_doc]
    assert 0 < np.mean(values) < 1  # the generations exercise both outcomes
    assert got[name] == pytest.approx(np.mean(values), abs=1e-12), filter_name
    assert got[f"{name}_stderr"] == pytest.approx(mean_stderr(values), abs=1e-12)


MATH_GENERATIONS = (
    " We find $x$. Final Answer: The final answer is ${answer}$. I hope it is correct.",
    " So it is $\\boxed{{{answer}}}$.\nFinal Answer: The final answer is {answer}",
    " Final Answer: The final answer is $7$. I hope it is correct.",
    " I cannot tell.",
    " Final Answer: The final answer is $0.5$. I hope it is correct.",
    " Final Answer: The final answer is $\\frac12$. I hope it is correct.")


def test_minerva_math_metrics_equal_lm_eval(data_dir):
  theirs = lm_eval_task("minerva_math_algebra", data_dir, 4)
  mine = ours("minerva_math_algebra", data_dir, 4)
  texts = [MATH_GENERATIONS[i % len(MATH_GENERATIONS)].format(answer=inst.doc["answer"])
           for i, inst in enumerate(theirs.instances)]
  per_doc = [theirs.process_results(inst.doc, [text])
             for inst, text in zip(theirs.instances, texts)]
  got = seqio.get_mixture_or_task("minerva_math_algebra").metric_fns[0](_targets(mine), texts)
  for name in ("exact_match", "math_verify"):
    values = [r[name] for r in per_doc]
    assert 0 < np.mean(values) < 1, name
    assert got[name] == pytest.approx(np.mean(values), abs=1e-12), name
    assert got[f"{name}_stderr"] == pytest.approx(mean_stderr(values), abs=1e-12)
  # The normalised gold answers are lm-eval's own.
  assert [ex["meta"]["answers"][0] for ex in mine] == [i.doc["answer"] for i in theirs.instances]


def test_boolq_google_schema_maps_answer_to_label():
  docs = [multiple_choice._boolq_process_doc({"question": "q", "passage": "p", "answer": True})]
  assert docs[0]["label"] == 1


def test_hellaswag_preprocess_matches_lm_eval():
  from lm_eval.tasks.hellaswag import utils
  for text in (" A [title] B [header] C  D ", "x [step] y", "  plain text "):
    assert multiple_choice.hellaswag_preprocess(text) == utils.preprocess(text)


def test_rolling_metrics_equal_lm_eval_aggregations(tmp_path):
  from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
  texts = ["Hello world, this is café.", " Another  document\nwith lines. ", "x"]
  docs = [{"text": t} for t in texts]
  settings = task_lib.Settings(data_dir=str(tmp_path))
  task = dataclasses.replace(perplexity.HELDOUT, dataset=lambda split, data_dir: docs,
                             process_docs=None)
  mine = render.render(task, settings)
  assert [ex["context"] for ex in mine] == texts and {ex["kind"] for ex in mine} == {
      "loglikelihood_rolling"}
  lls = [-20.5, -33.0, -4.25]
  got = metrics.rolling(_targets(mine), np.array([(ll, 0.0) for ll in lls]))
  words = [(ll, ConfigurableTask.count_words(t)) for ll, t in zip(lls, texts)]
  nbytes = [(ll, ConfigurableTask.count_bytes(t)) for ll, t in zip(lls, texts)]
  assert got["word_perplexity"] == pytest.approx(weighted_perplexity(words), rel=1e-12)
  assert got["byte_perplexity"] == pytest.approx(weighted_perplexity(nbytes), rel=1e-12)
  assert got["bits_per_byte"] == pytest.approx(bits_per_byte(nbytes), rel=1e-12)
