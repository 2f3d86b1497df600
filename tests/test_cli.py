"""`fineline`: bad input is one line; a bug keeps its traceback; --debug shows it always."""

import sys
import types

import pytest

from fineline import cli
from fineline.errors import UserError


@pytest.fixture
def command(monkeypatch):
  """A `fineline fake` command whose run raises what the test puts in `raises`."""
  module = types.ModuleType("fake_command")
  module.raises = None

  def run(args):
    del args
    if module.raises is not None:
      raise module.raises
    return 0

  module.add_arguments = lambda parser: parser.add_argument("--x", default=None)
  module.run = run
  monkeypatch.setitem(sys.modules, "fake_command", module)
  monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_command", "a test command"))
  return module


def test_user_error_is_one_line_naming_the_command(command, capsys):
  command.raises = UserError("train.batch_size=3 does not split over 2 devices")
  assert cli.main(["fake"]) == 1
  err = capsys.readouterr().err
  assert err == "fineline fake: error: train.batch_size=3 does not split over 2 devices\n"


def test_missing_file_is_a_user_error(command, capsys):
  command.raises = FileNotFoundError("no such checkpoint /x")
  assert cli.main(["fake"]) == 1
  assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("bug", [ValueError("operands could not be broadcast"),
                                 KeyError("params"), RuntimeError("boom")])
def test_internal_errors_keep_their_traceback(command, bug):
  command.raises = bug
  with pytest.raises(type(bug)):
    cli.main(["fake"])


@pytest.mark.parametrize("argv", [["--debug", "fake"], ["fake", "--debug"]])
def test_debug_shows_the_traceback_of_user_errors(command, argv):
  command.raises = UserError("bad flag")
  with pytest.raises(UserError, match="bad flag"):
    cli.main(argv)


def test_real_command_reports_bad_input_in_one_line(capsys):
  assert cli.main(["plan"]) == 1
  assert capsys.readouterr().err.strip() == (
      "fineline plan: error: fineline plan needs at least one --gin_file")


def test_gin_binding_without_value_is_a_user_error(capsys):
  assert cli.main(["plan", "--gin.train.seed"]) == 1
  assert "--gin.train.seed has no value" in capsys.readouterr().err
