"""C-Eval and CMMLU: their released CSV files, the subject groups in the examination
capability, and the message when the files are missing."""

import codecs

import pytest
import seqio

from eval_fixtures import write_exam_csvs

from evals import capabilities, exams, render, sources
from fineline.evaluation import tasks as task_lib


def test_released_csv_layouts_load(tmp_path):
  write_exam_csvs(tmp_path, n=6)
  ceval = sources.load_split(exams.ceval_task("accountant").dataset, "val", str(tmp_path))
  cmmlu = sources.load_split(exams.cmmlu_task("agronomy").dataset, "dev", str(tmp_path))
  assert len(ceval) == 6 and len(cmmlu) == 5
  assert ceval[1]["question"] == cmmlu[1]["Question"] == '第一行\n第二行, "引号"？'
  assert set(cmmlu[0]) == {"", "Question", "A", "B", "C", "D", "Answer"}
  assert ceval[0]["answer"] in "ABCD" and ceval[0]["id"] == "0"


def test_byte_order_mark_is_dropped(tmp_path):
  path = tmp_path / "bom.csv"
  path.write_bytes(codecs.BOM_UTF8 + "Question,Answer\n问,A\n".encode())
  assert sources.read_csv(str(path)) == [{"Question": "问", "Answer": "A"}]


def test_five_shots_from_dev_under_the_subject_header(tmp_path):
  write_exam_csvs(tmp_path, n=3)
  settings = task_lib.Settings(data_dir=str(tmp_path))
  with task_lib.use_settings(settings):
    requests = render.render(exams.cmmlu_task("agronomy"), settings)
  assert len(requests) == 3 * 4 and [r["continuation"] for r in requests[:4]] == [
      " A", " B", " C", " D"]
  context = requests[0]["context"]
  assert context.startswith("以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n")
  assert context.count("答案：") == 6 and context.endswith("答案：")


def test_groups_and_capabilities():
  for group, subjects in (("ceval", exams.CEVAL_SUBJECTS), ("cmmlu", exams.CMMLU_SUBJECTS)):
    subtasks = seqio.get_subtasks(seqio.get_mixture_or_task(group))
    assert sorted(t.name for t in subtasks) == sorted(f"{group}_{s}" for s in subjects)
    assert task_lib.task_info(group).capability == capabilities.EXAMINATION
    assert task_lib.task_info(f"{group}_law" if group == "ceval" else f"{group}_arts"
                              ).num_fewshot == 5
  assert len(exams.CEVAL_SUBJECTS) == 52 and len(exams.CMMLU_SUBJECTS) == 67
  for task in ("mmlu", "mmlu_anatomy", "ceval", "ceval_law", "cmmlu", "cmmlu_arts"):
    assert capabilities.capability(task) == capabilities.EXAMINATION
    assert capabilities.chance(task) == 0.25
  assert capabilities.capability("minerva_math_precalc") == capabilities.MATH
  assert capabilities.chance("social_iqa") == pytest.approx(1 / 3)


def test_missing_files_named_with_where_to_get_them(tmp_path):
  with pytest.raises(sources.MissingDataError) as e:
    sources.load_split(exams.ceval_task("law").dataset, "val", str(tmp_path), task="ceval_law")
  message = str(e.value)
  assert "'ceval_law'" in message and str(tmp_path) in message
  assert "ceval/val/law_val.csv" in message and "ceval-exam.zip" in message


def test_a_file_in_another_layout_names_task_column_and_row(tmp_path):
  settings = task_lib.Settings(data_dir=str(tmp_path), num_fewshot=0)
  (tmp_path / "cmmlu" / "test").mkdir(parents=True)
  (tmp_path / "cmmlu" / "test" / "arts.csv").write_text(
      "question,A,B,C,D,answer\nq,a,b,c,d,A\n", encoding="utf-8")
  (tmp_path / "cmmlu" / "test" / "anatomy.csv").write_text(
      ",Question,A,B,C,D,Answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n", encoding="utf-8")
  with task_lib.use_settings(settings):
    with pytest.raises(ValueError, match=(
        r"'cmmlu_arts'.*\['Question', 'Answer'\].*,Question,A,B,C,D,Answer")):
      render.render(exams.cmmlu_task("arts"), settings)
    with pytest.raises(ValueError, match="'cmmlu_anatomy': document 1 has Answer='E'"):
      render.render(exams.cmmlu_task("anatomy"), settings)


def test_suite_reports_missing_files_per_task_without_failing(tmp_path):
  from fineline.evaluation import suite as suite_lib
  suite = suite_lib.TaskSuite(["race", "cmmlu_arts", "truthfulqa_mc2"],
                              task_lib.Settings(data_dir=str(tmp_path)))
  assert suite.prepared == []
  assert "race/test.jsonl" in suite.errors["race"] and "EleutherAI/race" in suite.errors["race"]
  assert "cmmlu/test/arts.csv" in suite.errors["cmmlu_arts"]
  assert "truthfulqa/validation.jsonl" in suite.errors["truthfulqa_mc2"]
