import json

import numpy as np
from matplotlib import image as mpimg

import analysis_fixtures as fx
from fineline.analysis import plots
from fineline.analysis import records


def _assert_png(path):
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  pixels = mpimg.imread(path)
  assert pixels.shape[0] > 100 and pixels.shape[1] > 100
  assert pixels[..., :3].std() > 0.01  # something was drawn


def _two_series(tmp_path):
  path = tmp_path / "sizes.jsonl"
  recs = fx.make_records(model="small") + fx.make_records(model="big", seed=1,
                                                          tokens_per_step=2 * fx.TOKENS_PER_STEP)
  for rec in recs[1::4]:
    del rec["tasks"]["copy_mc"]
  path.write_text("\n".join(json.dumps(r) for r in recs))
  return records.load_series([path])[0]


def test_group_plot_has_one_line_per_series_on_a_log_axis(tmp_path):
  series = _two_series(tmp_path)
  path = plots.plot_group(tmp_path / "facts.png", "facts", series)
  _assert_png(path)


def test_heatmap_with_gaps_and_loss_plot(tmp_path):
  series = _two_series(tmp_path)
  _assert_png(plots.plot_heatmap(tmp_path / "heat.png", series[0]))
  # Records without loss: nothing to plot against.
  assert plots.plot_loss(tmp_path / "loss.png", series) is None
  series[0].loss = np.linspace(3.0, 2.0, len(series[0].tokens))
  series[0].loss_source = "record loss"
  _assert_png(plots.plot_loss(tmp_path / "loss.png", series))


def test_human_tokens():
  assert plots.human_tokens(4.1e6) == "4.1M"
  assert plots.human_tokens(1.26e12) == "1.26T"
  assert plots.human_tokens(512) == "512"
