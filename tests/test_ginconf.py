import os

import pytest

import train_fixtures
from fineline import ginconf
from fineline.training import trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return train_fixtures.make_corpus(str(tmp_path_factory.mktemp("corpus")))


def test_command_line_bindings_are_split_from_other_flags():
  bindings, rest = ginconf.split_bindings(
      ["--gin_file=a.gin", "--gin.MODEL_DIR='/tmp/x'", "--gin.train.seed", "3", "--x"])
  assert bindings == ["MODEL_DIR = '/tmp/x'", "train.seed = 3"]
  assert rest == ["--gin_file=a.gin", "--x"]


def test_unknown_parameter_names_binding_and_file(tmp_path, corpus):
  path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"))
  with open(path, "a", encoding="utf-8") as f:
    f.write("train.learning_rat = 0.1\n")
  with pytest.raises(ValueError, match=r"(?s)run.gin.*learning_rat"):
    ginconf.parse([path], ["MODEL_DIR = '/tmp/x'"])


def test_unknown_configurable_names_it_and_the_file(tmp_path):
  path = tmp_path / "typo.gin"
  path.write_text("include 'runs/pretrain.gin'\nPretrainDta.task = 'x'\n")
  with pytest.raises(ValueError, match=r"(?s)typo.gin.*PretrainDta"):
    ginconf.parse([str(path)])


def test_bad_command_line_binding_is_named():
  with pytest.raises(ValueError, match=r"--gin.train.nope=1"):
    ginconf.parse(["runs/tiny_cpu.gin"], ["train.nope = 1", "MODEL_DIR = '/tmp/x'"])


def test_macro_used_but_never_set_names_macro_and_file(tmp_path):
  path = tmp_path / "m.gin"
  path.write_text("include 'runs/pretrain.gin'\ntrain.num_microbatches = %MICRO\n")
  with pytest.raises(ValueError, match=r"macro %MICRO is used in .*m.gin but never set"):
    ginconf.parse([str(path)])


def test_missing_required_binding_and_macro_are_named(tmp_path, corpus):
  path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"))
  with pytest.raises(ValueError, match="MODEL_DIR"):
    ginconf.parse([path])
  path2 = tmp_path / "noreq.gin"
  path2.write_text("include 'models/tiny.gin'\ntrain.model_dir = '/tmp/x'\n")
  ginconf.parse([str(path2)])
  with pytest.raises(ValueError, match=r"missing gin binding\(s\) train.preset, train.train_steps"):
    ginconf.call(trainer.train, [str(path2)])


def test_unknown_preset_names_the_known_ones(tmp_path, corpus):
  path = train_fixtures.run_gin(corpus, str(tmp_path / "run.gin"))
  ginconf.parse([path], [f"MODEL_DIR = '{tmp_path}/run'", "PRESET = 'llama-9000'"])
  with pytest.raises(ValueError, match=r"train.preset .*'llama-9000'.*known presets: .*amber-7b.*tiny"):
    ginconf.call(trainer.train, [path])


def test_missing_gin_file_says_where_it_looked():
  with pytest.raises(FileNotFoundError, match="nope.gin not found"):
    ginconf.parse(["runs/nope.gin"])


def test_every_preset_has_a_model_file_and_every_run_file_parses():
  import gin
  from fineline.models import presets
  for name in presets.PRESETS:
    path = os.path.join(ginconf.GIN_DIR, "models", name.replace("-", "_") + ".gin")
    with open(path, encoding="utf-8") as f:
      assert f"PRESET = '{name}'" in f.read(), path
  for run in ("tiny_cpu", "demo_cpu", "amber_7b", "openllama_7b"):
    tokenizer = ["TOKENIZER = '/tmp/t.model'"] if "7b" in run else []  # only these read it
    ginconf.parse([f"runs/{run}.gin"], ["MODEL_DIR = '/tmp/x'", *tokenizer])
    assert gin.query_parameter("%PRESET") in presets.PRESETS
    for macro in ("TRAIN_STEPS", "BATCH_SIZE", "SEQUENCE_LENGTH", "SAVE_EVERY_STEPS",
                  "KEEP_EVERY_STEPS", "SEED"):
      assert gin.query_parameter(f"%{macro}") is not None


def test_a_runs_directory_in_the_working_directory_does_not_break_includes(tmp_path,
                                                                            monkeypatch):
  (tmp_path / "runs" / "demo").mkdir(parents=True)  # run outputs beside the checkout
  monkeypatch.chdir(tmp_path)
  ginconf.parse(["runs/tiny_cpu.gin"], ["MODEL_DIR = '/tmp/unused'"])


def test_a_macro_no_file_reads_is_an_error_naming_the_closest(tmp_path):
  with pytest.raises(ValueError, match=r"--gin.TRAIN_STEP=100: no gin file or binding reads the "
                                       r"macro TRAIN_STEP; did you mean --gin.TRAIN_STEPS\?"):
    ginconf.parse(["runs/tiny_cpu.gin"], ["MODEL_DIR = '/tmp/x'", "TRAIN_STEP = 100"])
  with pytest.raises(ValueError, match=r"--gin.ZZZ=1: .*macros read: .*TRAIN_STEPS"):
    ginconf.parse(["runs/tiny_cpu.gin"], ["MODEL_DIR = '/tmp/x'", "ZZZ = 1"])
  # A macro read only by another command-line binding is read.
  ginconf.parse(["runs/tiny_cpu.gin"], ["MODEL_DIR = '/tmp/x'", "STEPS2 = 7",
                                        "TRAIN_STEPS = %STEPS2"])


def test_unknown_parameter_names_the_closest_known_one(tmp_path):
  with pytest.raises(ValueError, match=r"--gin.train.train_step=1: .*'train_step'.*"
                                       r"did you mean train.train_steps\?"):
    ginconf.parse(["runs/tiny_cpu.gin"], ["MODEL_DIR = '/tmp/x'", "train.train_step = 1"])
  with pytest.raises(ValueError, match=r"--gin.train.zzz=1: .*its parameters: model_dir, "):
    ginconf.parse(["runs/tiny_cpu.gin"], ["MODEL_DIR = '/tmp/x'", "train.zzz = 1"])
  path = tmp_path / "typo.gin"
  path.write_text("include 'runs/tiny_cpu.gin'\nPretrainData.shuffle_bufer_size = 10\n")
  with pytest.raises(ValueError, match=r"(?s)typo.gin.*did you mean "
                                       r"PretrainData.shuffle_buffer_size\?"):
    ginconf.parse([str(path)], ["MODEL_DIR = '/tmp/x'"])
