"""report.md / report.html of a run, `qdarts report` and `qdarts inspect`; the page opened in
headless Chromium when it is installed."""

import base64
import json
import re
import shutil
import subprocess

import pytest

from qdarts.cli import main
from qdarts.report import render_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def test_markdown_embeds_every_plot(finished_run):
  run_dir, _ = finished_run
  text = (run_dir / "report.md").read_text()
  linked = re.findall(r"^!\[[^\]]+\]\((plots/[a-z_]+\.png)\)$", text, re.M)
  assert len(linked) == 5
  assert all((run_dir / path).is_file() for path in linked)


def test_html_is_one_offline_file_with_the_same_content(finished_run):
  run_dir, result = finished_run
  page = (run_dir / "report.html").read_text()
  images = DATA_URI.findall(page)
  assert len(images) == (run_dir / "report.md").read_text().count("![")
  for alt, data in images:
    assert base64.b64decode(data).startswith(PNG_MAGIC), alt
  without_images = DATA_URI.sub("", page)
  assert not re.search(r"(src|href)=", without_images)  # nothing to fetch, no file, no network
  for layer in result["subnet"]:
    assert f"<td>{layer['choice']}</td><td>{layer['op']}</td>" in page
  assert "<code>model.onnx</code>" in page


def test_html_escapes_text_and_names_a_missing_figure(tmp_path):
  page = render_html("# a <b> & `x<y`\n\n![lost](plots/none.png)\n", tmp_path, "t")
  assert "<h1>a &lt;b&gt; &amp; <code>x&lt;y</code></h1>" in page
  assert "figure not found: plots/none.png" in page


def _chromium() -> str | None:
  return next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
  )


PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
  });
  document.body.appendChild(out);
});
</script>"""


def _loaded_images(page_path, tmp_path) -> dict:
  """Opens the page in headless Chromium (with a probe script appended to a copy) and
  returns ``{"images": count, "broken": [alt...]}`` as seen after the load event."""
  probe = tmp_path / f"probe-{page_path.name}"
  probe.write_text(page_path.read_text().replace("</body>", PROBE + "</body>"))
  proc = subprocess.run(
    [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
     "--dump-dom", probe.as_uri()],
    capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  found = re.search(r'<pre id="image-check">([^<]*)</pre>', proc.stdout)
  assert found, proc.stderr[-2000:]
  return json.loads(found.group(1))


@pytest.mark.skipif(
  _chromium() is None,
  reason="headless Chromium not installed (Debian: apt-get install chromium chromium-driver)",
)
def test_report_html_loads_every_image_in_chromium(finished_run, tmp_path):
  run_dir, _ = finished_run
  seen = _loaded_images(run_dir / "report.html", tmp_path)
  assert seen == {"images": 5, "broken": []}
  # the probe does see a broken image: one that is not a PNG
  page = run_dir / "report.html"
  damaged = tmp_path / "report.html"
  damaged.write_text(re.sub(r"base64,[^\"]*", "base64,bm90IGEgUE5H", page.read_text(), count=1))
  assert len(_loaded_images(damaged, tmp_path)["broken"]) == 1


@pytest.fixture
def run_copy(finished_run, tmp_path):
  """A copy of the shared run, for commands that rewrite its files."""
  run_dir, result = finished_run
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "events"))
  return copy, result


def test_report_command_rewrites_plots_and_pages(run_copy, capsys):
  run, _ = run_copy
  shutil.rmtree(run / "plots")
  (run / "report.html").unlink()
  before = json.loads((run / "result.json").read_text())["artifacts"]
  assert main(["report", str(run)]) == 0
  printed = capsys.readouterr().out.split()
  assert str(run / "report.html") in printed and str(run / "plots" / "subnet.png") in printed
  assert len(DATA_URI.findall((run / "report.html").read_text())) == 5
  after = {a["path"]: a for a in json.loads((run / "result.json").read_text())["artifacts"]}
  assert after["report.html"]["bytes"] == (run / "report.html").stat().st_size
  assert {a["path"] for a in before} == set(after)


def test_report_without_probability_history_leaves_out_its_plots(run_copy):
  run, _ = run_copy
  (run / "probs_history.npz").unlink()
  assert main(["report", str(run)]) == 0
  assert not (run / "plots" / "op_probabilities.png").exists()
  assert "op_probabilities" not in (run / "report.md").read_text()


def test_inspect_prints_the_subnet_costs_and_artifacts(finished_run, capsys):
  run_dir, result = finished_run
  assert main(["inspect", str(run_dir)]) == 0
  out = capsys.readouterr().out
  for layer in result["subnet"]:
    assert re.search(rf"^{layer['choice']}\s+{layer['op']}\s", out, re.M)
  assert "bops: " in out and "fake_quant: " in out
  for name in ("report.html", "plots/subnet.png", "events", "model.onnx"):
    assert str(run_dir / name) in out, name
  assert main(["inspect", "--json", str(run_dir)]) == 0
  desc = json.loads(capsys.readouterr().out)
  assert desc["cost"] == result["cost"]
  assert [layer["op"] for layer in desc["layers"]] == [s["op"] for s in result["subnet"]]


@pytest.mark.parametrize("command", ["inspect", "report"])
def test_a_folder_that_is_not_a_finished_run_is_one_error_line(command, tmp_path, capsys):
  (tmp_path / "config.yaml").write_text("name: x\n")
  assert main([command, str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "result.json: not found" in err[0] and "--resume" in err[0]
  (tmp_path / "result.json").write_text("{broken")
  assert main([command, str(tmp_path)]) == 2
  assert "result.json: not a readable JSON file" in capsys.readouterr().err
