"""Training documents and held-out evaluation items of the demo skills corpus.

Each skill has a line format shared by its training documents and its evaluation prompts;
the prompts are built from held-out material (template/person pairs, number pairs,
adjective/noun subjects, random word lists) that the training generators never emit.
Generation answers end where the training line ends, so greedy decoding stops at "\\n".
"""

from __future__ import annotations

import random
from typing import Callable

from fineline.data import skills_world as sw

# --- grammar -------------------------------------------------------------------------------

def _subject(rng, world, *, held_out: bool):
  while True:
    adj, noun = rng.choice(sw.ADJECTIVES), rng.randrange(len(sw.NOUNS))
    if ((adj, noun) in world.held_out_subjects) == held_out:
      return adj, noun


def _attractor(rng, noun, plural):
  other = rng.choice([i for i in range(len(sw.NOUNS)) if i != noun])
  return f" {rng.choice(sw.ATTRACTOR_PREPS)} the {sw.NOUNS[other][plural]}"


def _free_sentence(rng, world, *, attractor: bool, held_out=False, plural=None,
                   attractor_plural=None):
  """("The old dogs near the cat", ("runs", "run"), "at home", plural) of one sentence."""
  adj, noun = _subject(rng, world, held_out=held_out)
  plural = rng.random() < 0.5 if plural is None else plural
  att = ""
  if attractor:
    att = _attractor(rng, noun, rng.random() < 0.5 if attractor_plural is None else attractor_plural)
  verb, place = rng.choice(sw.VERBS), rng.choice(sw.PLACES)
  return f"The {adj} {sw.NOUNS[noun][plural]}{att}", verb, place, plural


def _pair_line(rng, world, *, attractor: bool, held_out=False):
  """"One old dog runs home. Two old dogs" + "run home." (numbers in either order)."""
  adj, noun = _subject(rng, world, held_out=held_out)
  first_plural = rng.random() < 0.5
  verb, place = rng.choice(sw.VERBS), rng.choice(sw.PLACES)
  att = _attractor(rng, noun, first_plural) if attractor else ""  # conflicts in sentence two
  parts = []
  for plural in (first_plural, not first_plural):
    count = rng.choice(sw.COUNT_WORDS[plural])
    parts.append((f"{count} {adj} {sw.NOUNS[noun][plural]}{att}", f"{verb[plural]} {place}."))
  return f"{parts[0][0]} {parts[0][1]} {parts[1][0]}", parts[1][1]


def grammar_doc(rng, world) -> str:
  lines = []
  for _ in range(rng.randint(4, 7)):
    attractor = rng.random() < 0.5
    if rng.random() < 0.6:
      subject, verb, place, plural = _free_sentence(rng, world, attractor=attractor)
      lines.append(f"{subject} {verb[plural]} {place}.")
    else:
      context, answer = _pair_line(rng, world, attractor=attractor)
      lines.append(f"{context} {answer}")
  return "\n".join(lines)


def agreement_items(rng, world, n, *, attractor: bool):
  mc, gen = {}, {}  # keyed by context: distinct prompts
  while len(mc) < n:
    lead, lead_verb, lead_place, lead_plural = _free_sentence(rng, world, attractor=attractor)
    plural = rng.random() < 0.5
    subject, verb, place, _ = _free_sentence(rng, world, attractor=attractor, held_out=True,
                                             plural=plural, attractor_plural=not plural)
    context = f"{lead} {lead_verb[lead_plural]} {lead_place}. {subject}"
    mc[context] = {"context": context, "choices": [f"{verb[0]} {place}.", f"{verb[1]} {place}."],
                   "gold": int(plural)}
  while len(gen) < n:
    context, answer = _pair_line(rng, world, attractor=attractor, held_out=True)
    gen[context] = {"context": context, "answer": answer}
  return list(mc.values()), list(gen.values())


# --- copying -------------------------------------------------------------------------------

def copy_doc(rng, world) -> str:
  held_out = set(world.copy_mc_sequences) | set(world.copy_gen_sequences)
  lines, count = [], rng.randint(3, 5)
  while len(lines) < count:
    words = tuple(rng.sample(sw.COPY_WORDS, rng.randint(3, 7)))
    if words not in held_out:
      lines.append(f"Repeat: {' '.join(words)} | {' '.join(words)}")
  return "\n".join(lines)


def copy_items(rng, world, n):
  mc, gen = [], []
  for words in world.copy_mc_sequences[:n]:
    head, tail = words[:-3], words[-3:]
    # Distractors: the tail reordered, and with one or all words foreign to the line. Noticing
    # which words occurred gets 1/2; copying them in order, by induction, gets all.
    foreign = rng.sample([w for w in sw.COPY_WORDS if w not in words], 4)
    reordered = tail
    while reordered == tail:
      reordered = tuple(rng.sample(tail, 3))
    swapped = list(tail)
    swapped[rng.randrange(3)] = foreign[0]
    choices = [" ".join(c) for c in (tail, reordered, swapped, foreign[1:])]
    rng.shuffle(choices)
    mc.append({"context": f"Repeat: {' '.join(words)} | {' '.join(head)}", "choices": choices,
               "gold": choices.index(" ".join(tail))})
  for words in world.copy_gen_sequences[:n]:
    gen.append({"context": f"Repeat: {' '.join(words)} |", "answer": " ".join(words)})
  return mc, gen


# --- arithmetic ----------------------------------------------------------------------------

def _training_pair(rng, world):
  while True:
    a = rng.randrange(10) if rng.random() < 0.3 else rng.randrange(100)
    b = rng.randrange(100)
    if (a, b) not in world.held_out_pairs:
      return a, b


def math_doc(rng, world) -> str:
  lines = []
  for _ in range(rng.randint(4, 8)):
    a, b = _training_pair(rng, world)
    if rng.random() < 0.7:
      lines.append(f"{a} + {b} = {a + b}")
    elif a != b:
      lines.append(f"Which is more, {a} or {b}? {max(a, b)}")
  return "\n".join(lines)


def _shuffled(rng, gold, distractors):
  choices = [gold] + distractors
  rng.shuffle(choices)
  return choices, choices.index(gold)


def addition_items(rng, world, n):
  pairs = sorted(p for p in world.held_out_pairs)
  rng.shuffle(pairs)
  mc, gen = [], []
  for a, b in pairs[:n]:
    total = a + b
    near = [total + d for d in (-11, -10, -2, -1, 1, 2, 10, 11) if total + d >= 0]
    choices, gold = _shuffled(rng, str(total), [str(x) for x in rng.sample(near, 3)])
    mc.append({"context": f"{a} + {b} =", "choices": choices, "gold": gold})
    gen.append({"context": f"{a} + {b} =", "answer": str(total)})
  return mc, gen


def comparison_items(rng, world, n):
  pairs = sorted(p for p in world.held_out_pairs if p[0] != p[1])
  rng.shuffle(pairs)
  mc, gen = [], []
  for a, b in pairs[:n]:
    context = f"Which is more, {a} or {b}?"
    mc.append({"context": context, "choices": [str(a), str(b)], "gold": int(b > a)})
    gen.append({"context": context, "answer": str(max(a, b))})
  return mc, gen


# --- the synthetic world -------------------------------------------------------------------

def _fact_line(person, attr, template_index):
  value = getattr(person, attr)
  return sw.FACT_TEMPLATES[attr][template_index].format(name=person.name, value=value)


def bio_doc(rng, world) -> str:
  lines = []
  for person in rng.sample(world.people, 2):
    facts = []
    for attr, templates in sw.FACT_TEMPLATES.items():
      allowed = [i for i in range(len(templates)) if i != person.held_out_template[attr]]
      facts.append(_fact_line(person, attr, rng.choice(allowed)))
    rng.shuffle(facts)
    if rng.random() < 0.3:
      facts.insert(1 + facts.index(next(f for f in facts if person.city in f)),
                   sw.CITY_TEMPLATE.format(city=person.city, country=world.country_of(person)))
    if person.two_hop_in_training and rng.random() < 0.5:
      facts.append(sw.TWO_HOP_TEMPLATE.format(name=person.name, country=world.country_of(person)))
    lines.extend(facts)
  return "\n".join(lines)


def atlas_doc(rng, world) -> str:
  cities = rng.sample(sorted(world.city_country), rng.randint(4, 6))
  return "\n".join(sw.CITY_TEMPLATE.format(city=c, country=world.city_country[c]) for c in cities)


def _cloze(template, person, value):
  head, tail = template.split("{value}")
  return head.format(name=person.name).rstrip(), f"{value}{tail}"


def fact_items(rng, world, n):
  mc, gen = [], []
  facts = [(p, attr) for p in world.people for attr in sw.FACT_TEMPLATES]
  rng.shuffle(facts)
  for person, attr in facts[:n]:
    value = getattr(person, attr)
    template = sw.FACT_TEMPLATES[attr][person.held_out_template[attr]]
    context, answer = _cloze(template, person, value)
    others = [v for v in sw.ATTRIBUTE_VALUES[attr] if v != value]
    choices, gold = _shuffled(rng, value, rng.sample(others, 3))
    mc.append({"context": context, "choices": choices, "gold": gold})
    gen.append({"context": context, "answer": answer})
  return mc, gen


def two_hop_items(rng, world, n):
  mc, gen = [], []
  for person in [p for p in world.people if not p.two_hop_in_training][:n]:
    country = world.country_of(person)
    context, answer = _cloze(sw.TWO_HOP_TEMPLATE.replace("{country}", "{value}"), person, country)
    others = [c for c in sw.COUNTRIES if c != country]
    choices, gold = _shuffled(rng, country, rng.sample(others, 3))
    mc.append({"context": context, "choices": choices, "gold": gold})
    gen.append({"context": context, "answer": answer})
  return mc, gen


# --- the mixture ---------------------------------------------------------------------------

# Document kind → (generator, share of documents).
DOCUMENT_MIXTURE: dict[str, tuple[Callable, float]] = {
    "grammar": (grammar_doc, 0.20),
    "copying": (copy_doc, 0.20),
    "math": (math_doc, 0.25),
    "bio": (bio_doc, 0.30),
    "atlas": (atlas_doc, 0.05),
}

# Task name → (item builder, capability group, MC chance level). Each task has an `_mc` and
# a `_gen` form.
TASKS: dict[str, tuple[Callable, str, float]] = {
    "agreement": (lambda r, w, n: agreement_items(r, w, n, attractor=False), "grammar", 1 / 2),
    "agreement_attractor": (lambda r, w, n: agreement_items(r, w, n, attractor=True), "grammar",
                            1 / 2),
    "copying": (copy_items, "copying", 1 / 4),
    "addition": (addition_items, "math", 1 / 4),
    "comparison": (comparison_items, "math", 1 / 2),
    "facts": (fact_items, "world_knowledge", 1 / 4),
    "two_hop": (two_hop_items, "compositional", 1 / 4),
}


def documents(rng: random.Random, world: sw.World, num_documents: int) -> list[str]:
  kinds = list(DOCUMENT_MIXTURE)
  weights = [DOCUMENT_MIXTURE[k][1] for k in kinds]
  return [DOCUMENT_MIXTURE[k][0](rng, world)
          for k in rng.choices(kinds, weights=weights, k=num_documents)]
