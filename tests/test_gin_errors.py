"""gin's own error texts still read as `gin_errors` expects (fails first on a gin upgrade
that rewords them)."""

import gin
import pytest

from fineline import gin_errors


@gin.configurable
def _needs_two(alpha=gin.REQUIRED, beta=gin.REQUIRED, gamma=0):
  return alpha, beta, gamma


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_reads_the_missing_required_bindings_of_gins_error():
  gin.parse_config("_needs_two.gamma = 1")
  with pytest.raises(RuntimeError) as e:
    _needs_two()
  assert gin_errors.missing_required(e.value) == ("_needs_two", ["alpha", "beta"])


def test_reads_the_unknown_parameter_of_gins_error():
  with pytest.raises(ValueError) as e:
    gin.parse_config("_needs_two.alhpa = 1")
  assert gin_errors.unknown_parameter(e.value) == ("_needs_two", "alhpa")


def test_other_errors_are_not_read():
  assert gin_errors.missing_required(RuntimeError("out of memory")) is None
  assert gin_errors.unknown_parameter("No configurable matching 'nope'.") is None
