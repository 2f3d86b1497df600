"""MATH's answer extraction, normalisation and equivalence equal lm-eval's minerva_math
utilities on answers chosen to hit each rule."""

import pytest

from evals import minerva_math

utils = pytest.importorskip("lm_eval.tasks.minerva_math.utils")

ANSWERS = (
    "\\frac{1}{2}", "\\frac12", "\\dfrac{3}{4}", "1,000", "0,1", "(1,2)", "[2,5)", "x = 5",
    "5\\text{ cm}", "2\\pi cm", "\\left(3, 4\\right)", "12^\\circ", "12^{\\circ}",
    "\\$4.50", "an apple", "\\textbf{7}", "\\overline{12}", "\\boxed{9}", "\\sqrt2",
    "\\sqrt[3]8", "\\sqrt[3]{8}", "10\\%", "5 \\text{ and } 6", "3 \\mbox{ inches}",
    "x^2+1", "-3.", "$\\pi$", "4 \\; 5", "\\text{(B)}", "10 students", "3\\ldots",
    "100 \\text{ dollars}", "{,}000", "\\text{m}^2", "7 feet", "",
)
SOLUTIONS = (
    "So $x = \\boxed{\\frac{1}{2}}$.", "Thus \\boxed{\\{1, 2\\}} and more.",
    "The answer is \\boxed 5$ then.", "Nested \\boxed{\\frac{a}{\\sqrt{b}}}.",
    "Two boxes \\boxed{1} then \\boxed{2}.", "An \\fbox{3} here.", "None at all.",
    "Unclosed \\boxed{3.",
)


@pytest.mark.parametrize("answer", ANSWERS)
def test_normalisation_equals_lm_eval(answer):
  assert minerva_math.normalize_final_answer(answer) == utils.normalize_final_answer(answer)


@pytest.mark.parametrize("solution", SOLUTIONS)
def test_boxed_answer_equals_lm_eval(solution):
  assert minerva_math.last_boxed(solution) == utils.last_boxed_only_string(solution)
  boxed = utils.last_boxed_only_string(solution)
  if boxed is not None and not boxed.startswith("\\fbox"):
    assert minerva_math.unbox(boxed) == utils.remove_boxed(boxed)


def test_stated_answer_and_equivalence_equal_lm_eval():
  texts = ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.",
           "Final Answer: The final answer is 7", "no answer here",
           "Final Answer: The final answer is $x=3$.\nMore text.")
  for text in texts:
    assert minerva_math.stated_answer(text) == utils.get_unnormalized_answer(text)
  pairs = (("0.5", "\\frac{1}{2}"), ("\\frac{2}{4}", "\\frac{1}{2}"), ("(1,2)", "(1,2)"),
           ("x^2+2x+1", "(x+1)^2"), ("3", "4"), ("[2,5)", "[2,6)"), ("", ""),
           ("\\sqrt{8}", "2\\sqrt{2}"), ("[invalidanswer]", "5"))
  for x1, x2 in pairs:
    assert minerva_math.is_equiv(x1, x2) == utils.is_equiv(x1, x2), (x1, x2)
  assert minerva_math.is_equiv("0.5", "\\frac{1}{2}") and not minerva_math.is_equiv("3", "4")


def test_solution_without_boxed_answer_is_named():
  with pytest.raises(ValueError, match="without a \\\\boxed answer"):
    minerva_math.reference_answer("The answer is 5.")


def test_scoring_works_off_the_main_thread():
  # sympy's and math-verify's time limits use SIGALRM, which only the main thread can set;
  # an evaluator running in a worker thread scores without them.
  import concurrent.futures
  targets = [{"answers": ["\\frac{1}{2}"], "solution": "So $x = \\boxed{\\frac{1}{2}}$."}] * 2
  texts = ["Final Answer: The final answer is $0.5$. I hope it is correct.", "No idea."]
  on_main = minerva_math.math_metric(targets, texts)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    in_worker = pool.submit(minerva_math.math_metric, targets, texts).result()
  assert in_worker == on_main
  assert (on_main["exact_match"], on_main["math_verify"]) == (0.5, 0.5)
