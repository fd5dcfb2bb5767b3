"""The HTML report built from tiny real runs, checked as a file and as a page in headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.compare import run_compare
from analysis.report import report_from_paths
from probes import cli
from probes.evaluate import EvalConfig, evaluate
from probes.probing.run import ProbeConfig, run_probes
from probes.results import write_results
from tests.conftest import save_tiny_gpt2, write_documents
from tests.test_cli_errors import assert_one_line_error, run_cli

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"), reason="Debian chromium is not installed (CI installs it)"
)
MARKUP_DOC = "<img src=x onerror=alert({})>"  # document names: must show as text, never as an element
MARKUP_MODEL = "<b>bold"  # in every model name (folder names cannot hold "/")
SEQ_LEN = 16


def _model(folder: Path, mode: str, seed: int) -> Path:
    save_tiny_gpt2(folder, seed=seed)
    (folder / "training.json").write_text(json.dumps({"mode": mode, "steps": 10, "n_params": 123_456}))
    return folder


def _probe(model: Path, docs: Path, out: Path) -> Path:
    config = ProbeConfig(
        model=str(model),
        data=str(docs),
        out=str(out),
        tau="1..3",
        probe="softmax",
        seq_len=SEQ_LEN,
        max_tokens=SEQ_LEN * 60,
        device="cpu",
        n_boot=200,
        progress=False,
        dtype="float32",
    )
    run_probes(config)
    return out


def _eval(model: Path, docs: Path, out: Path) -> Path:
    config = EvalConfig(
        model=str(model),
        out=str(out),
        data=str(docs),
        seq_len=SEQ_LEN,
        max_tokens=SEQ_LEN * 60,
        n_boot=200,
        device="cpu",
        progress=False,
    )
    evaluate(config)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Vanilla, myopic and bigram tiny GPT-2s (kinds set by training.json), probed and evaluated for real."""
    root = tmp_path_factory.mktemp("report-runs")
    docs = write_documents(root / "docs", n_docs=10, words_per_doc=200)
    for index, path in enumerate(sorted(docs.iterdir())):
        path.rename(docs / f"{MARKUP_DOC.format(index)}.txt")
    found: dict[str, Path] = {"docs": docs}
    for seed, mode in enumerate(("vanilla", "myopic", "bigram")):
        model = _model(root / f"{mode}-{MARKUP_MODEL}", mode, seed)
        if mode != "bigram":
            _probe(model, docs, root / mode / "probe")
        _eval(model, docs, root / mode / "eval")
        found[mode] = root / mode
    run_compare(str(found["vanilla"]), str(found["myopic"]), str(found["bigram"]), root / "comparison", n_boot=200)
    found["comparison"] = root / "comparison"
    return found


@pytest.fixture(scope="module")
def single_report(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`probe-future report` on one probe run: the demo's situation."""
    out = tmp_path_factory.mktemp("single")
    assert cli.main(["report", str(runs["vanilla"] / "probe"), "--out", str(out), "--n-boot", "200"]) == 0
    return out / "report.html"


def report_path(which: str, runs: dict[str, Path], single_report: Path) -> Path:
    return runs["comparison"] / "report.html" if which == "comparison" else single_report


# ------------------------------------------------------------------------------------------ as a file


@pytest.mark.parametrize("which", ["comparison", "single"])
def test_report_is_self_contained_and_escaped(which: str, runs, single_report) -> None:
    text = report_path(which, runs, single_report).read_text(encoding="utf-8")
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "<script" not in text.lower()
    assert not re.search(r"""<[^>]*\s(?:src|href)\s*=\s*(?!["']?(?:data:|#))""", text), "a reference outside the file"
    assert not re.search(r"https?://", text)
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(uris) >= 2
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri))) as image:
            assert image.width > 100 and image.height > 100
    assert "<b>" not in text and html.escape(MARKUP_MODEL) in text
    assert "<img src=x" not in text
    headings = [match for match in re.findall(r"<h2[^>]*>([^<]+)</h2>", text)]
    assert headings[:3] == ["Verdict", "Setup and provenance", "Loss by position"]
    assert "Limitations of these runs" in headings


def test_comparison_report_content(runs) -> None:
    text = html.unescape((runs["comparison"] / "report.html").read_text(encoding="utf-8"))
    assert "myopia gap (myopic − vanilla CE, nats)" in text and "pre-caching share" in text
    assert "Thresholds:" in text and "held-out documents with the largest" in text
    assert MARKUP_DOC.format(0)[:12] in text  # document names reach the page, as text
    table = pd.read_parquet(runs["comparison"] / "comparison.parquet")
    assert {"gap_ce_nats", "precaching_share", "delta_top1", "lacking_share_top1"} <= set(table["metric"])
    assert "trained for 10 steps" in text and "test documents" in text


def test_single_run_report_has_no_verdict(single_report) -> None:
    text = single_report.read_text(encoding="utf-8")
    assert "no verdict" in text and "No eval run was given" in text
    assert "Future-token probes" in text and "Synthetic task" not in text


def test_synthetic_section_when_present(runs, tmp_path: Path) -> None:
    folder = tmp_path / "synthetic"
    rows = [
        {"model": f"syn-{kind}", "kind": kind, "layer": layer, "tau": None, "target": "sin", "probe": "ridge"}
        | {"metric": "r2", "value": value, "ci_low": value - 0.01, "ci_high": value + 0.01, "lookback": lookback}
        for kind, scale in (("vanilla", 1.0), ("myopic", 0.0))
        for layer in (1, 2)
        for lookback in range(0, 6)
        for value in [scale * float(np.exp(-lookback / 3))]
    ]
    losses = (("vanilla", "model", 0.05), ("myopic", "model", 1.25), ("baseline", "predict-0", 1.25))
    rows += [
        {"model": f"syn-{kind}", "kind": kind, "target": "y", "probe": probe, "metric": "huber", "value": value}
        | {"ci_low": value - 0.01, "ci_high": value + 0.01}
        for kind, probe, value in losses
    ]
    rows += [
        {"model": "syn-vanilla", "kind": "vanilla", "layer": 2, "target": "y", "probe": "ridge", "metric": "r2"}
        | {"value": 0.97, "ci_low": 0.96, "ci_high": 0.98}
    ]
    write_results(pd.DataFrame(rows), folder)
    provenance = {"stage": "synthetic", "args": {"p": 1.0}, "data": {"freq": 3.0}}
    (folder / "provenance.json").write_text(json.dumps(provenance))
    path = report_from_paths([str(runs["vanilla"] / "probe"), str(folder)], tmp_path / "out", n_boot=200)
    text = path.read_text(encoding="utf-8")
    assert "Synthetic task" in text and "synthetic task: probe R-squared" in text
    assert "sin(3·x" in text and "sin(10" not in text
    summary = text[text.index("test Huber [95% CI]") :]
    assert "<td>vanilla</td><td>0.050 [0.040, 0.060]</td><td>0.040</td><td>0.970 [0.960, 0.980]</td>" in summary
    assert "<td>1.000 [0.990, 1.010]</td>" in summary  # vanilla's layer-1 sine probe at look-back 0
    assert "<td>myopic</td><td>1.250 [1.240, 1.260]</td><td>1.000</td>" in summary
    assert "<td>predict-0</td><td>1.250 [1.240, 1.260]</td><td>1.000</td>" in summary


def test_report_regenerates_from_a_comparison_folder(runs, tmp_path: Path) -> None:
    path = report_from_paths([str(runs["comparison"])], tmp_path / "again", n_boot=200)
    again = path.read_text(encoding="utf-8")
    first = (runs["comparison"] / "report.html").read_text(encoding="utf-8")
    verdict = re.compile(r'<div class="label">([^<]+)</div>')
    assert verdict.findall(again) == verdict.findall(first)


def test_report_bad_input(runs, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    code, err = run_cli(["report", str(runs["vanilla"]), "--out", str(tmp_path / "file" / "x")], capsys)
    assert_one_line_error(code, err, "cannot create --out")
    code, err = run_cli(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "does not exist")


# ---------------------------------------------------------------------------------------- in Chromium

PROBE_PAGE = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="frame" src="report.html" width="1200" height="2400"></iframe>
<script>
window.addEventListener("load", () => {
  const out = document.getElementById("result");
  try {
    const frame = document.getElementById("frame");
    const doc = frame.contentDocument;
    out.textContent = JSON.stringify({
      images: Array.from(doc.images).map(img => [img.complete, img.naturalWidth]),
      resources: frame.contentWindow.performance.getEntriesByType("resource").map(entry => entry.name),
      scripts: doc.scripts.length,
      bold: doc.getElementsByTagName("b").length,
      text: doc.body.innerText,
    });
  } catch (error) { out.textContent = "ERROR " + error; }
});
</script></body></html>
"""


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@needs_chromium
@pytest.mark.parametrize("which", ["comparison", "single"])
def test_report_in_headless_chromium(which: str, runs, single_report, tmp_path: Path) -> None:
    page = tmp_path / "page"
    page.mkdir()
    (page / "report.html").write_bytes(report_path(which, runs, single_report).read_bytes())
    (page / "probe.html").write_text(PROBE_PAGE, encoding="utf-8")
    done = chromium(
        [
            "--allow-file-access-from-files",  # lets the probe page read the report in its frame
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (page / "probe.html").as_uri(),
        ],
        tmp_path / "profile-dom",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stdout[-2000:]
    state = json.loads(html.unescape(found.group(1)))
    assert state["images"] and all(complete and width > 0 for complete, width in state["images"]), state["images"]
    assert all(name.startswith(("file:", "data:")) for name in state["resources"]), state["resources"]
    assert state["scripts"] == 0 and state["bold"] == 0
    assert MARKUP_MODEL in state["text"]
    if which == "comparison":
        assert MARKUP_DOC.format(0)[:12] in state["text"]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console

    shot = tmp_path / "shot.png"
    done = chromium(
        ["--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}", (page / "report.html").as_uri()],
        tmp_path / "profile-shot",
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and figures, not a blank page
