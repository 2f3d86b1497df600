"""The synthetic world and lexicon behind the demo skills corpus.

Everything here is a pure function of a `random.Random`, so one seed always gives the same
people, places and held-out splits. Names are invented so that no fact can be guessed from
anything but the generated training text.
"""

from __future__ import annotations

import dataclasses
import random

from fineline.errors import UserError

FIRST_NAMES = (
    "Alice", "Bruno", "Clara", "Daniel", "Elena", "Felix", "Greta", "Hugo", "Iris", "Jonas",
    "Karla", "Leon", "Mira", "Nico", "Olga", "Pavel", "Rosa", "Simon", "Tara", "Victor",
    "Wanda", "Yusuf", "Zara", "Anton", "Bianca", "Carlos", "Dora", "Emil", "Fiona", "Gustav")
LAST_NAMES = (
    "Adler", "Brandt", "Costa", "Dietz", "Evans", "Fischer", "Grant", "Holm", "Ivers",
    "Jansen", "Keller", "Lund", "Moreau", "Novak", "Olsen", "Pike", "Quinn", "Rossi", "Stone",
    "Thorne", "Vance", "Wolff")
CITIES = (
    "Amberton", "Brightwater", "Coldharbor", "Dunmore", "Eastwick", "Fairhaven", "Glenrock",
    "Highmoor", "Ironbridge", "Kingsport", "Lakeview", "Millbrook", "Northgate", "Oakridge",
    "Redcliff", "Stonehill")
COUNTRIES = ("Norland", "Sudavia", "Estmark", "Westria", "Valdor", "Kestonia")
JOBS = ("baker", "farmer", "doctor", "teacher", "painter", "sailor", "tailor", "nurse",
        "pilot", "miner", "singer", "potter")
COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black")

# Every fact template ends with the value, so each one is also a cloze prompt.
FACT_TEMPLATES = {
    "city": ("{name} lives in {value}.", "{name} has a house in {value}.",
             "The home of {name} is in {value}.", "{name} grew up in {value}."),
    "job": ("{name} works as a {value}.", "{name} earns a living as a {value}.",
            "By trade, {name} is a {value}.", "The job of {name} is {value}."),
    "color": ("{name} likes the color {value}.", "The favorite color of {name} is {value}.",
              "{name} always wears {value}.", "Ask {name} and the answer is {value}."),
}
ATTRIBUTE_VALUES = {"city": CITIES, "job": JOBS, "color": COLORS}
CITY_TEMPLATE = "{city} is a city in {country}."
TWO_HOP_TEMPLATE = "The country where {name} lives is {country}."

# Grammar: (singular, plural) pairs, so agreement is the only thing that decides the verb.
NOUNS = (("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("horse", "horses"),
         ("child", "children"), ("fox", "foxes"), ("mouse", "mice"), ("girl", "girls"),
         ("boy", "boys"), ("goat", "goats"), ("duck", "ducks"), ("king", "kings"))
ADJECTIVES = ("old", "young", "small", "big", "happy", "quiet", "tired", "clever", "brown",
              "lazy")
VERBS = (("runs", "run"), ("sleeps", "sleep"), ("sits", "sit"), ("waits", "wait"),
         ("plays", "play"), ("walks", "walk"), ("eats", "eat"), ("jumps", "jump"))
PLACES = ("in the garden", "near the river", "on the hill", "by the door", "under the tree",
          "at home", "in the barn", "on the road")
ATTRACTOR_PREPS = ("near", "behind", "with", "beside")
COUNT_WORDS = {False: ("One",), True: ("Two", "Three", "Many", "Some")}

# Words for the copying skill: frequent enough in the text for the tokenizer to learn them.
COPY_WORDS = (
    "apple", "river", "stone", "cloud", "lamp", "kiwi", "ruby", "tent", "piano", "mango",
    "candle", "tiger", "silver", "window", "garden", "rocket", "pepper", "violin", "wagon",
    "forest", "button", "island", "pencil", "marble", "ticket", "orange", "lemon", "cotton",
    "bridge", "anchor", "basket", "castle", "dragon", "feather", "honey", "jacket", "ladder",
    "magnet", "needle", "pillow", "rabbit", "saddle", "turtle", "velvet", "walnut", "yogurt",
    "zebra", "shell", "storm", "glass")


@dataclasses.dataclass(frozen=True)
class Person:
  name: str
  city: str
  job: str
  color: str
  # The fact template index (per attribute) that never appears in training for this person.
  held_out_template: dict[str, int]
  # Whether this person's two-hop sentence is stated in training (else it is evaluated).
  two_hop_in_training: bool


@dataclasses.dataclass(frozen=True)
class World:
  people: tuple[Person, ...]
  city_country: dict[str, str]
  # (adjective, noun index) subjects that never appear in grammar training text.
  held_out_subjects: frozenset[tuple[str, int]]
  # (a, b) additions and comparisons that never appear in training text (either order).
  held_out_pairs: frozenset[tuple[int, int]]
  # Word lists to copy in the multiple-choice and generation items, never in training.
  copy_mc_sequences: tuple[tuple[str, ...], ...]
  copy_gen_sequences: tuple[tuple[str, ...], ...]

  def country_of(self, person: Person) -> str:
    return self.city_country[person.city]


def build_world(rng: random.Random, *, num_people: int = 48, num_held_out_pairs: int = 300,
                held_out_subject_fraction: float = 0.25, num_copy_items: int = 100) -> World:
  """Samples people, their attributes and every held-out split."""
  names = [f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES]
  if num_people > len(names):
    raise UserError(f"num_people={num_people} exceeds the {len(names)} distinct names")
  rng.shuffle(names)
  city_country = {}
  shuffled_cities = list(CITIES)
  rng.shuffle(shuffled_cities)
  for i, city in enumerate(shuffled_cities):  # every country gets at least two cities
    city_country[city] = COUNTRIES[i % len(COUNTRIES)]
  people = []
  for i, name in enumerate(sorted(names[:num_people])):
    held = {attr: rng.randrange(len(t)) for attr, t in FACT_TEMPLATES.items()}
    people.append(Person(
        name=name, city=rng.choice(CITIES), job=rng.choice(JOBS), color=rng.choice(COLORS),
        held_out_template=held, two_hop_in_training=False))
  rng.shuffle(people)
  half = len(people) // 2
  people = [dataclasses.replace(p, two_hop_in_training=i < half) for i, p in enumerate(people)]
  subjects = [(a, n) for a in ADJECTIVES for n in range(len(NOUNS))]
  rng.shuffle(subjects)
  held_subjects = frozenset(subjects[:int(len(subjects) * held_out_subject_fraction)])
  pairs = set()
  while len(pairs) < num_held_out_pairs:
    a, b = rng.randrange(10, 100), rng.randrange(100)
    pairs.update({(a, b), (b, a)})
  sequences = {}  # ordered and distinct
  while len(sequences) < num_copy_items:
    sequences[tuple(rng.sample(COPY_WORDS, rng.randint(5, 7)))] = None
  while len(sequences) < 2 * num_copy_items:
    sequences[tuple(rng.sample(COPY_WORDS, rng.randint(3, 7)))] = None
  sequences = list(sequences)
  return World(people=tuple(people), city_country=city_country,
               held_out_subjects=held_subjects, held_out_pairs=frozenset(pairs),
               copy_mc_sequences=tuple(sequences[:num_copy_items]),
               copy_gen_sequences=tuple(sequences[num_copy_items:]))
