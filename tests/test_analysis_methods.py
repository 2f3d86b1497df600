from fineline.analysis import dynamics
from fineline.analysis import forecast
from fineline.analysis import methods
from fineline.analysis import records

SETTINGS = {"window": 4, "fit_min_r2": 0.8}


def test_methods_text_follows_the_constants_it_describes(monkeypatch):
  text = " ".join(methods.methods(SETTINGS))
  assert "first 10%, 20%, 40% of checkpoints" in text and "last 4 checkpoints" in text
  assert f"last {records.LOSS_WINDOW_STEPS} logged training losses" in text
  monkeypatch.setattr(forecast, "FRACTIONS", (0.25, 0.5))
  monkeypatch.setattr(dynamics, "EVENT_WINDOW", 9)
  monkeypatch.setattr(records, "LOSS_WINDOW_STEPS", 7)
  text = " ".join(methods.methods(dict(SETTINGS, window=6)))
  assert "first 25%, 50% of checkpoints" in text and "last 6 checkpoints" in text
  assert "up to 9 checkpoints each side" in text
  assert "last 7 logged training losses" in text
