"""The generated demo skills corpus: determinism, held-out items, facts, tokenizer, caching."""

import json
import os
import re

import pytest
import sentencepiece as spm

from fineline.data import skills
from fineline.data import skills_world as sw

SMALL = dict(num_documents=1500, num_eval_items=40)
_NAME = r"(?=\b([A-Z][a-z]+ [A-Z][a-z]+))"  # overlapping: "Ask Alice Adler"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return skills.ensure_corpus(str(tmp_path_factory.mktemp("c") / "skills"), seed=0, **SMALL)


def _train_text(corpus):
  docs = []
  for path in corpus.train_files:
    with open(path) as f:
      docs.extend(json.loads(line)["text"] for line in f)
  return docs


def _all_items(corpus):
  return {name: skills.read_items(spec["path"]) for name, spec in corpus.tasks.items()}


def test_same_seed_is_byte_identical_and_other_seed_differs(corpus, tmp_path):
  again = skills.ensure_corpus(str(tmp_path / "again"), seed=0, **SMALL)
  other = skills.ensure_corpus(str(tmp_path / "other"), seed=1, **SMALL)
  hashes = skills._hash_files(corpus.root)
  assert skills._hash_files(again.root) == hashes
  other_hashes = skills._hash_files(other.root)
  assert set(other_hashes) == set(hashes)
  changed = [rel for rel in hashes if other_hashes[rel] != hashes[rel]]
  assert any(rel.startswith("train/") for rel in changed)
  assert any(rel.startswith("eval/") for rel in changed)
  assert "tokenizer/tokenizer.model" in changed


def test_layout_and_task_table(corpus):
  assert len(corpus.train_files) == 4 and all(os.path.getsize(f) > 0 for f in corpus.train_files)
  assert os.path.isfile(os.path.join(corpus.tokenizer_dir, "tokenizer.model"))
  skills_names = {n[len("skills_"):].rsplit("_", 1)[0] for n in corpus.tasks}
  assert {"agreement", "copying", "addition", "facts", "two_hop"} <= skills_names
  for skill in skills_names:
    mc, gen = corpus.tasks[f"skills_{skill}_mc"], corpus.tasks[f"skills_{skill}_gen"]
    assert mc["kind"] == "multiple_choice" and gen["kind"] == "generation"
    assert mc["capability"] == gen["capability"]
    assert os.path.dirname(mc["path"]) == corpus.eval_dir
    assert os.path.basename(mc["path"]) == f"{skill}_mc.jsonl"
    assert gen["chance"] == 0.0
  capabilities = {spec["capability"] for spec in corpus.tasks.values()}
  assert {"grammar", "copying", "math", "world_knowledge", "compositional"} == capabilities


def test_items_are_well_formed(corpus):
  for name, items in _all_items(corpus).items():
    spec = corpus.tasks[name]
    assert items, name
    contexts = [it["context"] for it in items]
    assert len(set(contexts)) == len(contexts), f"{name}: repeated prompts"
    for it in items:
      assert it["context"] and it["context"] == it["context"].strip() and "\n" not in it["context"]
      if spec["kind"] == "multiple_choice":
        choices = it["choices"]
        assert len(set(choices)) == len(choices) and all(c.strip() == c and c for c in choices)
        assert 0 <= it["gold"] < len(choices)
        assert spec["chance"] == pytest.approx(1 / len(choices))
      else:
        assert set(it) == {"context", "answer"}
        assert it["answer"] and it["answer"] == it["answer"].strip() and "\n" not in it["answer"]


def test_held_out_prompts_never_start_a_training_line(corpus):
  text = "\n" + "\n".join(_train_text(corpus))
  for name, items in _all_items(corpus).items():
    for it in items:
      assert "\n" + it["context"] not in text, (name, it["context"])
      if " + " in it["context"]:  # no held-out sum anywhere, not even inside a longer one
        assert f" {it['context']} " not in text and f"\n{it['context']} " not in text


def test_generation_answers_end_training_lines(corpus):
  """Greedy decoding stops at "\\n": the training lines of each format end where answers do."""
  docs = _train_text(corpus)
  lines = [line for d in docs for line in d.split("\n")]
  assert any(re.fullmatch(r"\d+ \+ \d+ = \d+", line) for line in lines)
  assert any(re.fullmatch(r"Repeat: ([a-z]+ ?)+ \| ([a-z]+ ?)+", line) for line in lines)
  assert any(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+ lives in [A-Z][a-z]+\.", line)
             for line in lines)


def test_arithmetic_items_are_correct(corpus):
  items = _all_items(corpus)
  for it in items["skills_addition_gen"]:
    a, b = map(int, re.fullmatch(r"(\d+) \+ (\d+) =", it["context"]).groups())
    assert int(it["answer"]) == a + b
  for it in items["skills_addition_mc"]:
    a, b = map(int, re.fullmatch(r"(\d+) \+ (\d+) =", it["context"]).groups())
    assert int(it["choices"][it["gold"]]) == a + b
  for it in items["skills_comparison_mc"]:
    assert int(it["choices"][it["gold"]]) == max(map(int, it["choices"]))


def test_copying_gold_continues_the_repeated_list(corpus):
  items = _all_items(corpus)
  for it in items["skills_copying_mc"]:
    words, head = (part.split() for part in it["context"][len("Repeat: "):].split(" | "))
    assert words[:len(head)] == head
    assert it["choices"][it["gold"]] == " ".join(words[len(head):])
  for it in items["skills_copying_gen"]:
    assert it["context"] == f"Repeat: {it['answer']} |"


def test_agreement_gold_follows_the_subject_not_the_attractor(corpus):
  plural_nouns = {pl for _, pl in sw.NOUNS}
  for it in _all_items(corpus)["skills_agreement_attractor_mc"]:
    subject = it["context"].rsplit(". ", 1)[-1].split()
    assert subject[0] == "The" and subject[3] in sw.ATTRACTOR_PREPS
    plural = subject[2] in plural_nouns
    assert (subject[5] in plural_nouns) != plural  # the attractor disagrees
    assert it["choices"][it["gold"]].split()[0] in {v[plural] for v in sw.VERBS}


def test_facts_asked_about_are_stated_in_training(corpus):
  names = {f"{f} {l}" for f in sw.FIRST_NAMES for l in sw.LAST_NAMES}
  lines_of = {}  # person → the training lines that name them
  all_lines = set()
  for doc in _train_text(corpus):
    for line in doc.split("\n"):
      all_lines.add(line)
      for candidate in re.findall(_NAME, line):
        if candidate in names:
          lines_of.setdefault(candidate, set()).add(line)
  items = _all_items(corpus)

  def person_of(context):
    (name,) = [n for n in re.findall(_NAME, context) if n in names]
    return name

  for it in items["skills_facts_gen"]:
    name, value = person_of(it["context"]), it["answer"].rstrip(".")
    assert any(l.endswith(f" {value}.") for l in lines_of[name]), f"{name}: {value} never stated"
  for it in items["skills_two_hop_gen"]:
    name, country = person_of(it["context"]), it["answer"].rstrip(".")
    cities = {c for c in sw.CITIES for l in lines_of[name] if l.endswith(f" {c}.")}
    assert len(cities) == 1, (name, cities)
    assert f"{cities.pop()} is a city in {country}." in all_lines
    assert not any(country in l for l in lines_of[name])  # the two-hop fact is never stated


def test_tokenizer_matches_llama_conventions_and_round_trips(corpus):
  sp = spm.SentencePieceProcessor(model_file=os.path.join(corpus.tokenizer_dir, "tokenizer.model"))
  assert (sp.vocab_size(), sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (512, 0, 1, 2, -1)
  samples = _train_text(corpus)[:50] + ["Ünïcode — not in the corpus: 日本語 ✓"]
  for text in samples:
    assert sp.decode(sp.encode(text)) == text
  assert sp.encode("1234", out_type=str)[-4:] == ["1", "2", "3", "4"]  # digits split


def test_tokenizer_loads_with_transformers_as_llama(corpus):
  transformers = pytest.importorskip("transformers")
  sp = spm.SentencePieceProcessor(model_file=os.path.join(corpus.tokenizer_dir, "tokenizer.model"))
  tok = transformers.AutoTokenizer.from_pretrained(corpus.tokenizer_dir)
  assert type(tok).__name__ in ("LlamaTokenizer", "LlamaTokenizerFast")
  assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, len(tok)) == (1, 2, 0, 512)
  items = _all_items(corpus)
  texts = [it["context"] + " " + it["choices"][0] for it in items["skills_facts_mc"][:10]]
  texts += _train_text(corpus)[:10]
  for text in texts:
    ids = tok(text)["input_ids"]
    assert ids == [1] + sp.encode(text)
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_loads_as_the_trainers_vocabulary(corpus):
  from fineline.tokenizers import load_vocabulary  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=os.path.join(corpus.tokenizer_dir, "tokenizer.model"))
  vocab = load_vocabulary(corpus.tokenizer)
  assert vocab.add_bos and vocab.vocab_size == 512 and vocab.eos_id == 2
  for text in _train_text(corpus)[:5]:
    assert list(vocab.encode(text)) == sp.encode(text)


def test_ensure_corpus_reuses_a_complete_corpus(corpus, monkeypatch):
  def fail(*a, **k):
    raise AssertionError("regenerated a complete corpus")
  monkeypatch.setattr(skills, "write_corpus", fail)
  again = skills.ensure_corpus(corpus.root, seed=0, **SMALL)
  assert again == corpus


def test_ensure_corpus_regenerates_on_version_change_or_damage(tmp_path, monkeypatch):
  root = str(tmp_path / "skills")
  first = skills.ensure_corpus(root, seed=0, **SMALL)
  calls = []
  write = skills.write_corpus
  monkeypatch.setattr(skills, "write_corpus", lambda *a, **k: calls.append(1) or write(*a, **k))
  monkeypatch.setattr(skills, "GENERATOR_VERSION", skills.GENERATOR_VERSION + 1)
  second = skills.ensure_corpus(root, seed=0, **SMALL)
  assert calls == [1]
  with open(os.path.join(root, "manifest.json")) as f:
    assert json.load(f)["generator_version"] == skills.GENERATOR_VERSION
  os.remove(second.train_files[0])
  skills.ensure_corpus(root, seed=0, **SMALL)
  assert calls == [1, 1] and os.path.isfile(first.train_files[0])
  assert sorted(os.listdir(tmp_path)) == ["skills"]  # no build or old directories left


def test_ensure_corpus_leaves_foreign_directories_alone(tmp_path):
  (tmp_path / "mine.txt").write_text("precious")
  with pytest.raises(ValueError, match="not a skills corpus"):
    skills.ensure_corpus(str(tmp_path), **SMALL)
  assert (tmp_path / "mine.txt").read_text() == "precious"


def test_default_data_dir_follows_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("FINELINE_DATA_DIR", str(tmp_path))
  assert skills.default_data_dir() == str(tmp_path / "skills")
  monkeypatch.delenv("FINELINE_DATA_DIR")
  assert skills.default_data_dir().endswith(os.path.join(".cache", "fineline", "skills"))
