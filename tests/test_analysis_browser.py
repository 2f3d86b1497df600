"""Renders a `fineline analyze` report in headless Chromium: the page must show the verdict
and every plot image must have loaded (non-zero natural size), checked by a script run in
the browser itself; then tools/screenshot_report.sh must write a real PNG of it."""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
from matplotlib import image as mpimg

import analysis_fixtures as fx
from fineline import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; "
                             ".ci/run installs it where apt-get is available)")

# Runs after the page (and its embedded images) loaded; writes what it found into the DOM.
CHECK = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {file: img.dataset.file, complete: img.complete, width: img.naturalWidth,
            height: img.naturalHeight};
  });
  var verdict = document.getElementById("verdict");
  var text = verdict ? verdict.nextElementSibling.nextElementSibling.innerText : null;
  // Sort the per-task table by its "last" column, as a reader clicking the head would.
  var table = Array.prototype.find.call(document.querySelectorAll("table.sortable"),
      function (t) { return t.rows[0].cells[0].textContent === "task"; });
  var col = Array.prototype.findIndex.call(table.rows[0].cells,
      function (c) { return c.textContent === "last"; });
  table.rows[0].cells[col].click();
  var sorted = Array.prototype.slice.call(table.tBodies[0].rows).map(
      function (r) { return Number(r.cells[col].dataset.v); });
  var pre = document.createElement("pre");
  pre.id = "browser-check";
  pre.textContent = JSON.stringify({images: images, verdict: text, sorted: sorted,
                                    toc: document.querySelectorAll("nav a").length});
  document.body.appendChild(pre);
});
</script>
"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("browser")
  # The rate drops tenfold at step 1500: the curve plots carry an event marker.
  run = fx.write_run(root / "run", fx.make_records(),
                     learning_rate=lambda step: 3e-4 if step < 1500 else 3e-5)
  assert cli.main(["analyze", "--results", str(run), "--output", str(root / "rep")]) == 0
  return root / "rep"


def test_page_shows_the_verdict_and_every_plot_loads(report_dir, tmp_path):
  page = (report_dir / "index.html").read_text(encoding="utf-8")
  checked = tmp_path / "checked.html"  # the report alone, in another directory: self-contained
  checked.write_text(page.replace("</body>", CHECK + "</body>"), encoding="utf-8")
  dom = subprocess.run(
      [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
       "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=120, check=True)
  found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom.stdout, re.S)
  assert found, dom.stderr[-2000:]
  result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
  plots = sorted(p.relative_to(report_dir).as_posix() for p in (report_dir / "plots").iterdir())
  assert sorted(i["file"] for i in result["images"]) == plots and len(plots) >= 6
  for image in result["images"]:
    assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
  assert "Still improving significantly: facts." in result["verdict"]
  assert "Regressed: grammar." in result["verdict"]
  assert result["toc"] >= 8
  assert len(result["sorted"]) == 4 and result["sorted"] == sorted(result["sorted"])
  assert "lr 0.0003 → 3e-05" in page  # the rate drop from metrics.jsonl is reported


def test_screenshot_script_writes_a_png_of_the_page(report_dir, tmp_path):
  out = tmp_path / "report.png"
  subprocess.run(["bash", str(ROOT / "tools" / "screenshot_report.sh"), str(report_dir),
                  str(out), "1200", "1600"], check=True, timeout=120, capture_output=True)
  pixels = mpimg.imread(out)
  assert pixels.shape[:2] == (1600, 1200)
  assert pixels.std() > 0.05  # not a blank page
  assert [p.name for p in tmp_path.iterdir()] == ["report.png"]  # no temporary left behind


def test_screenshot_script_names_a_missing_report(tmp_path):
  done = subprocess.run(["bash", str(ROOT / "tools" / "screenshot_report.sh"), str(tmp_path),
                         str(tmp_path / "x.png")], capture_output=True, text=True)
  assert done.returncode == 1 and f"{tmp_path}/index.html not found" in done.stderr
  assert not (tmp_path / "x.png").exists()
