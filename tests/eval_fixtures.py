"""Small evaluation datasets in each benchmark's real schema, written inside tests.

`write_eval_data(data_dir)` lays them out as `fineline eval --data_dir` reads a user's own
copy (<data_dir>/<task>/<split>.jsonl), and `write_saved_arc(data_dir)` writes ARC-Easy as
a `datasets` save_to_disk directory where tools/get_eval_data.sh puts the real one.
"""

from __future__ import annotations

import json
import os
import random

WORDS = ("the quick brown fox jumps over lazy dog question answer model train token science "
         "history language number water energy plant animal light sound heat earth").split()


def _text(rng, lo=3, hi=9):
  return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _hellaswag(rng, i):
  ending = lambda: _text(rng) + rng.choice([".", " [title] step two.", " [header] more."])
  return {"ind": i, "activity_label": _text(rng, 1, 3).title(), "ctx_a": _text(rng) + ".",
          "ctx_b": _text(rng, 1, 3), "endings": [ending() for _ in range(4)],
          "source_id": f"x~{i}", "split": "val", "split_type": "indomain",
          "label": str(rng.randrange(4))}


def _arc(rng, i):
  n = rng.choice([3, 4, 4, 5])
  labels = list("ABCDE"[:n]) if rng.random() < 0.8 else [str(k + 1) for k in range(n)]
  return {"id": f"q{i}", "question": _text(rng) + "?",
          "choices": {"text": [_text(rng, 1, 4) for _ in range(n)], "label": labels},
          "answerKey": rng.choice(labels)}


def _piqa(rng, i):
  return {"goal": _text(rng), "sol1": _text(rng), "sol2": _text(rng), "label": rng.randrange(2)}


def _winogrande(rng, i):
  return {"sentence": f"{_text(rng)} _ {_text(rng)}.", "option1": rng.choice(WORDS).title(),
          "option2": rng.choice(WORDS).title(), "answer": rng.choice(["1", "2"])}


def _boolq(rng, i):
  return {"passage": _text(rng, 8, 20) + ".", "question": _text(rng), "idx": i,
          "label": rng.randrange(2)}


def _openbookqa(rng, i):
  return {"id": f"o{i}", "question_stem": _text(rng),
          "choices": {"text": [_text(rng, 1, 4) for _ in range(4)], "label": list("ABCD")},
          "answerKey": rng.choice("ABCD")}


def _sciq(rng, i):
  return {"question": _text(rng) + "?", "distractor1": _text(rng, 1, 2),
          "distractor2": _text(rng, 1, 2), "distractor3": _text(rng, 1, 2),
          "correct_answer": _text(rng, 1, 2),
          "support": rng.choice(["", " " + _text(rng, 5, 12) + "."])}


def _mmlu(rng, i):
  return {"question": " " + _text(rng) + "? ", "subject": "anatomy",
          "choices": [_text(rng, 1, 3) for _ in range(4)], "answer": rng.randrange(4)}


def _lambada(rng, i):
  return {"text": _text(rng, 8, 20) + " " + rng.choice(WORDS)}


def _gsm8k(rng, i):
  a, b = rng.randint(2, 99), rng.randint(2, 99)
  return {"question": f"{_text(rng)} has {a} and gets {b} more. How many?",
          "answer": f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}\n#### {a + b:,}"}


def _triviaqa(rng, i):
  value = rng.choice(WORDS).title()
  return {"question": _text(rng), "question_id": f"t{i}",
          "answer": {"aliases": [value, value.lower() + "s", f"The {value}"],
                     "normalized_aliases": [value.lower()], "value": value}}


def _social_iqa(rng, i):
  return {"context": _text(rng) + ".", "question": _text(rng, 2, 5) + "?",
          "answerA": _text(rng, 1, 4), "answerB": _text(rng, 1, 4), "answerC": _text(rng, 1, 4),
          "label": str(rng.randint(1, 3))}


def _commonsense_qa(rng, i):
  return {"id": f"c{i}", "question": " " + _text(rng) + "? ", "question_concept": _text(rng, 1, 1),
          "choices": {"label": list("ABCDE"), "text": [_text(rng, 1, 2) for _ in range(5)]},
          "answerKey": rng.choice("ABCDE")}


def _race(rng, i):
  problems = []
  for q in range(rng.randint(1, 4)):
    question = (_text(rng) + "  _  ." if rng.random() < 0.3 else _text(rng) + "?")
    problems.append({"answer": rng.choice("ABCD"), "question": question,
                     "options": [_text(rng, 1, 4) for _ in range(4)]})
  return {"example_id": f"high{i}.txt", "article": _text(rng, 15, 30) + ".",
          "problems": repr(problems)}  # a Python literal string, as EleutherAI/race has it


def _nq_open(rng, i):
  value = rng.choice(WORDS)
  answers = [f"the {value}", value.title() + "s"]
  return {"question": _text(rng), "answer": answers[:rng.randint(1, 2)]}


def _truthfulqa(rng, i):
  n1, n2 = rng.randint(2, 6), rng.randint(3, 8)
  true = rng.randint(1, n2 - 1)
  return {"question": _text(rng) + "?",
          "mc1_targets": {"choices": [_text(rng, 2, 6) + "." for _ in range(n1)],
                          "labels": [1] + [0] * (n1 - 1)},
          "mc2_targets": {"choices": [_text(rng, 2, 6) + "." for _ in range(n2)],
                          "labels": [1] * true + [0] * (n2 - true)}}


MATH_ANSWERS = ("\\frac{1}{2}", "[2,5)", "1,000", "5\\text{ cm}", "\\sqrt{2}", "-3", "x^2+1",
                "(1,2)", "\\dfrac{3}{4}", "12^\\circ", "\\pi", "0.25")


def _math(rng, i):
  answer = MATH_ANSWERS[i % len(MATH_ANSWERS)]
  boxed = f"\\boxed{{{answer}}}" if i % 5 != 4 else f"\\boxed {i + 3}"
  return {"problem": f"Compute ${_text(rng, 2, 4)}$ for $x={i}$.", "level": "Level 2",
          "type": "Algebra",
          "solution": f"We have ${_text(rng, 2, 5)} = {boxed}$." + (" Done." if i % 2 else "")}


def _exam_row(rng, question_key, answer_key):
  return {question_key: " " + _text(rng) + "？", "A": _text(rng, 1, 3), "B": _text(rng, 1, 3),
          "C": _text(rng, 1, 3), "D": _text(rng, 1, 3), answer_key: rng.choice("ABCD")}


SCHEMAS = {  # task → (document maker, splits)
    "hellaswag": (_hellaswag, ("train", "validation")),
    "arc_easy": (_arc, ("train", "validation", "test")),
    "arc_challenge": (_arc, ("train", "validation", "test")),
    "piqa": (_piqa, ("train", "validation")),
    "winogrande": (_winogrande, ("train", "validation")),
    "boolq": (_boolq, ("train", "validation")),
    "openbookqa": (_openbookqa, ("train", "validation", "test")),
    "sciq": (_sciq, ("train", "validation", "test")),
    "mmlu_anatomy": (_mmlu, ("dev", "test")),
    "lambada": (_lambada, ("test",)),
    "gsm8k": (_gsm8k, ("test",)),
    "triviaqa": (_triviaqa, ("train", "validation")),
    "social_iqa": (_social_iqa, ("train", "validation")),
    "commonsense_qa": (_commonsense_qa, ("train", "validation")),
    "race": (_race, ("test",)),
    "nq_open": (_nq_open, ("train", "validation")),
    "truthfulqa": (_truthfulqa, ("validation",)),
    "minerva_math_algebra": (_math, ("test",)),
}


def make_docs(task: str, split: str, n: int = 12, seed: int = 0) -> list[dict]:
  maker, _ = SCHEMAS[task]
  rng = random.Random(f"{task}/{split}/{seed}")
  return [maker(rng, i) for i in range(n)]


def write_jsonl(path, rows) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def write_eval_data(data_dir, tasks=None, n: int = 12) -> str:
  for task in tasks or SCHEMAS:
    for split in SCHEMAS[task][1]:
      write_jsonl(os.path.join(data_dir, task, f"{split}.jsonl"),
                  make_docs(task, split, 5 if split == "dev" else n))
  return str(data_dir)


def write_exam_csvs(data_dir, n: int = 8) -> str:
  """C-Eval's accountant and CMMLU's agronomy subjects as their released CSV files: C-Eval
  id,question,A–D,answer,explanation (the explanation filled in dev only), CMMLU an unnamed
  index column then Question,A–D,Answer; one question spans two lines in each."""
  import csv
  layouts = (("ceval", ("dev", "val"), "{split}/accountant_{split}.csv",
              ("id", "question", "A", "B", "C", "D", "answer", "explanation")),
             ("cmmlu", ("dev", "test"), "{split}/agronomy.csv",
              ("", "Question", "A", "B", "C", "D", "Answer")))
  for exam, splits, pattern, header in layouts:
    question, answer = header[1], header[6]
    for split in splits:
      rng = random.Random(f"{exam}/{split}")
      rows = [{header[0]: i, **_exam_row(rng, question, answer),
               "explanation": "因为。" if split == "dev" else ""}
              for i in range(5 if split == "dev" else n)]
      rows[1][question] = "第一行\n第二行, \"引号\"？"
      path = os.path.join(data_dir, exam, pattern.format(split=split))
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([row[column] for column in header] for row in rows)
  return str(data_dir)


def write_saved_arc(data_dir, n: int = 12) -> str:
  """ARC-Easy validation as a save_to_disk directory at the offline copy's place."""
  import datasets
  path = os.path.join(data_dir, "hf_datasets", "ai2_arc", "ARC-Easy", "validation")
  datasets.Dataset.from_list(make_docs("arc_easy", "validation", n)).save_to_disk(path)
  return path
