"""Multiple-choice benchmarks with lm-evaluation-harness 0.4.13's prompts and scoring.

hellaswag, arc_easy, arc_challenge, piqa, winogrande (partial scoring), boolq,
openbookqa, sciq, social_iqa, commonsense_qa, race (high school, the last question of each
article after the earlier ones answered), truthfulqa_mc1 / truthfulqa_mc2 (the fixed
6-shot QA primer; MC2 scores the true answers' share of the probability mass) and mmlu
(57 subjects, 5 shots from dev, size-weighted aggregate). Importing this module also
registers the Chinese examinations of `evals.exams` (ceval, cmmlu).
Each follows the lm-eval task config of the same name; where lm-eval evaluates a split
the offline copies lack (ARC, OpenBookQA and SciQ use `test`), the first split present is
evaluated and recorded in the result.
"""

from __future__ import annotations

import ast
import re

from evals import capabilities as cap
from evals import metrics, registry
from evals.render import DocTask
from evals.sources import DatasetSpec

MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology "
    "college_chemistry college_computer_science college_mathematics college_medicine "
    "college_physics computer_security conceptual_physics econometrics electrical_engineering "
    "elementary_mathematics formal_logic global_facts high_school_biology "
    "high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics "
    "high_school_psychology high_school_statistics high_school_us_history "
    "high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous "
    "moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations "
    "security_studies sociology us_foreign_policy virology world_religions").split()


def hellaswag_preprocess(text: str) -> str:
  text = text.strip()
  # Brackets are artifacts of the WikiHow part of HellaSwag.
  text = text.replace(" [title]", ". ")
  text = re.sub("\\[.*?\\]", "", text)
  return text.replace("  ", " ")


def hellaswag_process_doc(doc):
  ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
  return {**doc, "query": hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
          "choices": [hellaswag_preprocess(e) for e in doc["endings"]],
          "gold": int(doc["label"])}


def _boolq_process_doc(doc):
  # google/boolq stores `answer` (bool); super_glue's boolq, which lm-eval reads, `label`.
  return doc if "label" in doc else {**doc, "label": int(doc["answer"])}


def _winogrande_choices(doc):
  idx = doc["sentence"].index("_")
  return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]


def _arc_tfds(ex):
  return {"id": ex["id"], "question": ex["question"], "choices": ex["choices"],
          "answerKey": ex["answerKey"]}


def _race_problems(doc) -> list[dict]:
  # EleutherAI/race stores each article's questions as a Python literal string.
  problems = doc["problems"]
  return ast.literal_eval(problems) if isinstance(problems, str) else problems


def _race_answer(problem) -> str:
  return problem["options"]["ABCD".index(problem["answer"])]


def race_text(doc) -> str:
  """The article, its earlier questions answered (a cloze question "…  _  ." filled in),
  then the last question, as lm-eval's race task renders a document."""
  problems = _race_problems(doc)
  text = "Article: " + doc["article"] + "\n\n"
  for problem in problems[:-1]:
    if problem["question"][-6:] == "  _  .":
      text += problem["question"][:-5] + _race_answer(problem) + "\n"
    else:
      text += f"Question: {problem['question']}\nAnswer: {_race_answer(problem)}\n"
  return text + problems[-1]["question"]


def _commonsense_qa_text(doc) -> str:
  options = "".join(f"{letter}. {text}\n" for letter, text in zip("ABCDE", doc["choices"]["text"]))
  return f"Question: {doc['question'].strip()}\n{options}Answer:"


TRUTHFULQA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain.")


def truthfulqa_task(variant: str) -> DocTask:
  """truthfulqa_mc1 / truthfulqa_mc2: the true answer(s) come first in each choice list."""
  targets = f"{variant}_targets"
  return DocTask(
      name=f"truthfulqa_{variant}", kind="multiple_choice",
      dataset=DatasetSpec("truthfulqa", hf_dir="truthful_qa/multiple_choice",
                          origin="the Hugging Face dataset truthfulqa/truthful_qa "
                                 "(multiple_choice) as <data_dir>/truthfulqa/validation.jsonl"),
      doc_to_text=lambda d: f"{TRUTHFULQA_PRIMER}\n\nQ: {d['question']}\nA:",
      doc_to_choice=lambda d: list(d[targets]["choices"]), doc_to_target=lambda d: 0,
      doc_meta=(lambda d: {"mc2_labels": list(d["mc2_targets"]["labels"])})
      if variant == "mc2" else None)


_ARC_TFDS_SPLITS = (("train", "train"), ("validation", "validation"), ("test", "test"))

TASKS = (
    DocTask(
        name="hellaswag", kind="multiple_choice",
        dataset=DatasetSpec("hellaswag", hf_dir="hellaswag/none"),
        process_doc=hellaswag_process_doc, doc_to_text=lambda d: d["query"],
        doc_to_choice=lambda d: d["choices"], doc_to_target=lambda d: d["gold"]),
    *(DocTask(
        name=name, kind="multiple_choice", eval_splits=("test", "validation"),
        exclude_eval_doc=False,
        dataset=DatasetSpec(name, hf_dir=f"ai2_arc/{subset}", tfds_name=f"ai2_arc/{subset}",
                            tfds_splits=_ARC_TFDS_SPLITS, from_tfds=_arc_tfds),
        doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
        doc_to_choice=lambda d: list(d["choices"]["text"]),
        doc_to_target=lambda d: list(d["choices"]["label"]).index(d["answerKey"]))
      for name, subset in (("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge"))),
    DocTask(
        name="piqa", kind="multiple_choice",
        dataset=DatasetSpec("piqa", hf_dir="piqa/plain_text", tfds_name="piqa",
                            tfds_splits=(("train", "train"), ("validation", "validation"))),
        doc_to_text=lambda d: f"Question: {d['goal']}\nAnswer:",
        doc_to_choice=lambda d: [d["sol1"], d["sol2"]], doc_to_target=lambda d: d["label"]),
    DocTask(
        name="winogrande", kind="multiple_choice", multiple_input=True,
        dataset=DatasetSpec("winogrande", hf_dir="winogrande/winogrande_xl"),
        doc_to_text=lambda d: {"1": 0, "2": 1}[d["answer"]],
        doc_to_target=lambda d: d["sentence"][d["sentence"].index("_") + 1:].strip(),
        doc_to_choice=_winogrande_choices),
    DocTask(
        name="boolq", kind="multiple_choice",
        dataset=DatasetSpec("boolq", hf_dir="boolq/none"), process_doc=_boolq_process_doc,
        doc_to_text=lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:",
        doc_to_choice=lambda d: ["no", "yes"], doc_to_target=lambda d: d["label"]),
    DocTask(
        name="openbookqa", kind="multiple_choice", eval_splits=("test", "validation"),
        exclude_eval_doc=False,
        dataset=DatasetSpec("openbookqa", hf_dir="openbookqa/main"),
        doc_to_text=lambda d: d["question_stem"],
        doc_to_choice=lambda d: list(d["choices"]["text"]),
        doc_to_target=lambda d: list(d["choices"]["label"]).index(d["answerKey"].lstrip())),
    DocTask(
        name="sciq", kind="multiple_choice", eval_splits=("test", "validation"),
        exclude_eval_doc=False,
        dataset=DatasetSpec("sciq", hf_dir="sciq/none"),
        doc_to_text=lambda d: f"{d['support'].lstrip()}\nQuestion: {d['question']}\nAnswer:",
        doc_to_choice=lambda d: [d["distractor1"], d["distractor2"], d["distractor3"],
                                 d["correct_answer"]],
        doc_to_target=lambda d: 3),
    DocTask(
        name="social_iqa", kind="multiple_choice",
        dataset=DatasetSpec("social_iqa", hf_dir="social_i_qa/none"),
        doc_to_text=lambda d: f"Q: {d['context']} {d['question']}\nA:",
        doc_to_choice=lambda d: [d["answerA"], d["answerB"], d["answerC"]],
        doc_to_target=lambda d: int(d["label"]) - 1),
    DocTask(
        name="commonsense_qa", kind="multiple_choice",
        dataset=DatasetSpec("commonsense_qa", hf_dir="tau/commonsense_qa/none"),
        doc_to_text=_commonsense_qa_text,
        doc_to_choice=lambda d: list("ABCDE"), doc_to_target=lambda d: d["answerKey"]),
    DocTask(
        name="race", kind="multiple_choice", eval_splits=("test",), exclude_eval_doc=False,
        fewshot_split="test",  # a test-only task: shots from test, unfiltered (as lm-eval)
        dataset=DatasetSpec("race", hf_dir="race/high",
                            origin="the Hugging Face dataset EleutherAI/race (high) as "
                                   "<data_dir>/race/test.jsonl"),
        doc_to_text=race_text,
        doc_to_choice=lambda d: list(_race_problems(d)[-1]["options"][:4]),
        doc_to_target=lambda d: "ABCD".index(_race_problems(d)[-1]["answer"])),
    truthfulqa_task("mc1"),
    truthfulqa_task("mc2"),
)

# Metric lists as in the lm-eval configs: these report acc only.
METRICS = {t: ("acc",) for t in ("boolq", "winogrande", "social_iqa", "commonsense_qa", "race",
                                 "truthfulqa_mc1")}
# The metric usually reported for each (as the LLaMA, OpenLLaMA and OLMo reports do).
PRIMARY = {"hellaswag": "acc_norm", "arc_challenge": "acc_norm", "openbookqa": "acc_norm",
           "piqa": "acc_norm"}


def mmlu_task(subject: str) -> DocTask:
  return DocTask(
      name=f"mmlu_{subject}", kind="multiple_choice", eval_splits=("test",),
      fewshot_split="dev", sampler="first_n", exclude_eval_doc=False,
      dataset=DatasetSpec(f"mmlu_{subject}", hf_dir=f"hails/mmlu_no_train/{subject}"),
      description=("The following are multiple choice questions (with answers) about "
                   f"{' '.join(subject.split('_'))}.\n\n"),
      doc_to_text=lambda d: (f"{d['question'].strip()}\nA. {d['choices'][0]}\n"
                             f"B. {d['choices'][1]}\nC. {d['choices'][2]}\n"
                             f"D. {d['choices'][3]}\nAnswer:"),
      doc_to_choice=lambda d: ["A", "B", "C", "D"], doc_to_target=lambda d: d["answer"])


def _register_all() -> None:
  for task in TASKS:
    names = METRICS.get(task.name, ("acc", "acc_norm"))
    metric_fn = {"truthfulqa_mc2": metrics.truthfulqa_mc2,
                 "truthfulqa_mc1": metrics.multiple_choice(names, report_chance=True)
                 }.get(task.name, metrics.multiple_choice(names))
    registry.register(task, metric_fn,
                      capability=cap.capability(task.name), chance=cap.chance(task.name),
                      primary_metric=PRIMARY.get(task.name, "acc"))
  for subject in MMLU_SUBJECTS:
    registry.register(mmlu_task(subject), metrics.multiple_choice(("acc",)),
                      capability=cap.capability("mmlu"), chance=cap.chance("mmlu"),
                      num_fewshot=5)
  registry.register_group("mmlu", [f"mmlu_{s}" for s in MMLU_SUBJECTS],
                          capability=cap.capability("mmlu"), chance=cap.chance("mmlu"),
                          num_fewshot=5)


_register_all()
# Registered with this module, which the default task modules include.
from evals import exams  # noqa: E402,F401  pylint: disable=wrong-import-position
