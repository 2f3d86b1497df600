"""Perplexity and bits per byte on held-out text (lm-eval's loglikelihood_rolling tasks).

Each document `{"text": str}` is scored whole with rolling windows; the task reports
word_perplexity, byte_perplexity and bits_per_byte aggregated over documents as lm-eval's
wikitext task does. `heldout_ppl` reads <data_dir>/heldout_ppl/test.jsonl (a run's own
held-out text) and falls back to the LAMBADA passages of the offline copies.
`register_perplexity_task(name, path_or_loader)` adds more such tasks.
"""

from __future__ import annotations

from evals import capabilities as cap
from evals import metrics, registry
from evals.render import DocTask
from evals.sources import DatasetSpec


def _texts(docs):
  return [d if "text" in d else {"text": d["query"] + " " + d["answers_text"][0]}
          for d in docs]


HELDOUT = DocTask(
    name="heldout_ppl", kind="loglikelihood_rolling", eval_splits=("test",),
    dataset=DatasetSpec("heldout_ppl", request_file="lambada/bpb_0shot/requests.jsonl.gz"),
    process_docs=_texts, doc_to_text=lambda d: "", doc_to_target=lambda d: d["text"])


def register_perplexity_task(name: str, path_or_loader, capability: str = cap.LANGUAGE_MODELING
                             ) -> None:
  """Items {"text": str} from a JSONL file / save_to_disk dir (relative to the data
  directory) or a callable loader(data_dir)."""
  task = DocTask(name=name, kind="loglikelihood_rolling", eval_splits=("eval",),
                 dataset=registry.item_loader(path_or_loader),
                 doc_to_text=lambda d: "", doc_to_target=lambda d: d["text"])
  registry.register(task, metrics.rolling, capability=capability, chance=None,
                    primary_metric="bits_per_byte")


registry.register(HELDOUT, metrics.rolling, capability=cap.LANGUAGE_MODELING, chance=None,
                  primary_metric="bits_per_byte")
