"""Numbers a referee would attack (issue 13): choices made on validation documents, the verdict's words, the
report's labels and colours, and the myopic model's own next-token deficit beside its probe deficit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.figures as figures
import analysis.report as report
from analysis.compare import run_compare
from analysis.comparison import OWN_OUTPUT
from probes.probing.run import summary_table
from probes.results import tidy, write_results
from probes.selection import TEST_FALLBACK, VALIDATION, best_layer_and_probe, best_per
from tests.analysis.test_compare import (
    N_BOOT,
    baseline_cells,
    doc_losses,
    myopic_probe_cells,
    probe_rows,
    vanilla_probe_cells,
    write_eval_run,
    write_per_doc,
    write_probe_run,
    write_synthetic_run,
)

# ------------------------------------------------------------------------------ choices on validation documents


def top1_frame(cells: dict[tuple[int, int, str], tuple[float, float]], kind: str = "vanilla") -> pd.DataFrame:
    """Top-1 rows: (layer, tau, probe) -> (test value, validation value)."""
    rows = [
        {"model": "m", "kind": kind, "layer": layer, "tau": tau, "target": "token", "probe": probe, "metric": "top1"}
        | {"value": test, "ci_low": test, "ci_high": test, "val_value": val}
        for (layer, tau, probe), (test, val) in cells.items()
    ]
    return tidy(rows)


# Layer 1 is the best on the test documents, layer 2 on the validation documents.
PLANTED = {
    (0, 1, "softmax"): (0.10, 0.10),
    (0, 2, "softmax"): (0.05, 0.05),
    (1, 1, "softmax"): (0.30, 0.20),
    (1, 2, "softmax"): (0.25, 0.10),
    (2, 1, "softmax"): (0.20, 0.25),
    (2, 2, "softmax"): (0.15, 0.20),
    (2, 1, "lstsq"): (0.40, 0.15),
    (2, 2, "lstsq"): (0.35, 0.05),
}


def test_layer_and_probe_are_chosen_on_validation_and_reported_on_test() -> None:
    choice = best_layer_and_probe(top1_frame(PLANTED), ("softmax", "lstsq"))
    assert choice is not None and (choice.layer, choice.probe) == (2, "softmax")
    assert choice.basis == VALIDATION
    assert choice.test.to_dict() == {1: 0.20, 2: 0.15}  # the test numbers of the choice, not the test maximum
    per_cell = best_per(top1_frame(PLANTED), ["layer", "tau"], ("softmax", "lstsq"))
    at_layer2 = per_cell[per_cell["layer"] == 2].set_index("tau")
    assert at_layer2["probe"].to_dict() == {1: "softmax", 2: "softmax"}  # lstsq is better on test only
    # A run written before validation scores existed: the choice falls back to the test numbers and says so.
    old = top1_frame(PLANTED).drop(columns="val_value")
    fallback = best_layer_and_probe(old, ("softmax", "lstsq"))
    assert fallback is not None and (fallback.layer, fallback.probe) == (2, "lstsq") and fallback.basis == TEST_FALLBACK


def test_console_table_chooses_on_validation() -> None:
    baselines = [
        {"model": "m", "kind": "vanilla", "layer": None, "tau": tau, "target": "token", "probe": name}
        | {"metric": "top1", "value": test, "ci_low": test, "ci_high": test, "val_value": val}
        for tau in (1, 2)
        for name, test, val in (("unigram", 0.09, 0.08), ("skip_bigram", 0.08, 0.09))
    ]
    table = summary_table(tidy(pd.concat([top1_frame(PLANTED), tidy(baselines)], ignore_index=True)))
    assert table.loc["layer 2", "tau=1"] == pytest.approx(0.20)  # softmax (better on validation), not lstsq 0.40
    assert table.loc["best baseline", "tau=1"] == pytest.approx(0.08)  # skip-bigram: better on validation
    assert table.loc["selected layer", "tau=2"] == pytest.approx(0.15)  # layer 2, not the test-best layer 1


# ------------------------------------------------------------------------------ the comparison and the verdict


def with_validation(cells: dict[tuple, tuple[float, float, float]], val: dict[tuple, float]) -> list[dict]:
    rows = probe_rows("vanilla", cells)
    for row in rows:
        row["val_value"] = val.get((row["layer"], row["tau"], row["probe"], row["metric"]), row["value"])
    return rows


def test_headline_probe_cell_is_chosen_on_validation(tmp_path: Path) -> None:
    # On test, layer 1 is best for vanilla at every τ; on validation, layer 0.
    val = {(0, tau, "softmax", "top1"): 0.9 for tau in (1, 2, 3)} | {
        (1, tau, "softmax", "top1"): 0.3 for tau in (1, 2, 3)
    }
    vanilla = write_probe_run(tmp_path / "v", with_validation(vanilla_probe_cells(), val))
    myopic = write_probe_run(tmp_path / "m", probe_rows("myopic", myopic_probe_cells()))
    comparison = run_compare(str(vanilla), str(myopic), None, tmp_path / "out", n_boot=N_BOOT)
    assert comparison.lacking is not None
    assert int(comparison.lacking["layer"]) == 0 and comparison.lacking["chosen_on"] == VALIDATION


def below_baseline_cells(kind: str) -> dict[tuple, tuple[float, float, float]]:
    """Probe cells where the vanilla probe is never above the best count baseline: no finite lacking share."""
    cells = {}
    for tau in (1, 2, 3):
        cells |= baseline_cells(tau)
        cells[(1, tau, "token", "softmax", "top1")] = (0.05, 0.04, 0.06) if kind == "vanilla" else (0.04, 0.03, 0.05)
    return cells


def test_verdict_with_probes_but_no_finite_share_says_so(tmp_path: Path) -> None:
    vanilla = write_probe_run(tmp_path / "v" / "probe", probe_rows("vanilla", below_baseline_cells("vanilla")))
    myopic = write_probe_run(tmp_path / "m" / "probe", probe_rows("myopic", below_baseline_cells("myopic")))
    comparison = run_compare(str(vanilla), str(myopic), None, tmp_path / "out", n_boot=N_BOOT)
    reason = comparison.verdict.reason
    assert comparison.verdict.label == "inconclusive"
    assert "no vanilla/myopic pair" not in reason and "was given" not in reason, reason
    assert "probe runs" in reason and "no finite share" in reason
    # With an eval pair as well (no bigram run): the gap sentence must not claim that no probe runs were given.
    losses, docs = doc_losses()
    write_eval_run(tmp_path / "v" / "eval", losses, docs, "vanilla")
    write_eval_run(tmp_path / "m" / "eval", losses + 0.1, docs, "myopic")
    both = run_compare(str(tmp_path / "v"), str(tmp_path / "m"), None, tmp_path / "out2", n_boot=N_BOOT)
    assert "or probe runs" not in both.verdict.reason and "no finite share" in both.verdict.reason


def own_output_cells(kind: str, value: float) -> dict[tuple, tuple[float, float, float]]:
    cells = vanilla_probe_cells() if kind == "vanilla" else myopic_probe_cells()
    return cells | {(2, 1, "token", OWN_OUTPUT, "top1"): (value, value - 0.05, value + 0.05)}


def test_own_next_token_deficit_beside_the_probe_deficit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    docs = [f"doc-{i:02d}" for i in range(15)]
    vanilla = write_probe_run(tmp_path / "v", probe_rows("vanilla", own_output_cells("vanilla", 0.4)))
    myopic = write_probe_run(tmp_path / "m", probe_rows("myopic", own_output_cells("myopic", 0.3)))
    write_per_doc(vanilla, "vanilla", own_output_cells("vanilla", 0.4), docs, rng)
    write_per_doc(myopic, "myopic", own_output_cells("myopic", 0.3), docs, rng)
    comparison = run_compare(str(vanilla), str(myopic), None, tmp_path / "out", n_boot=N_BOOT)
    table = comparison.table
    own_delta = table[(table["metric"] == "delta_top1") & (table["probe"] == OWN_OUTPUT)]
    assert len(own_delta) == 1 and own_delta["method"].iloc[0].startswith("paired")
    assert comparison.own is not None
    assert comparison.own["value"] == pytest.approx((0.4 - 0.3) / (0.4 - 0.1), abs=0.02)
    assert comparison.lacking is not None and comparison.lacking["probe"] != OWN_OUTPUT
    numbers = {number["name"]: number for number in report.key_numbers(comparison, [])}
    assert any("own output" in name for name in numbers)
    assert any(name.startswith("next-token top-1, vanilla − myopic") for name in numbers)
    lacking = next(
        number for name, number in numbers.items() if name.startswith("share of vanilla's above-baseline top-1")
    )
    assert "paired" in lacking["note"] and "independent" not in lacking["note"]
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "aggregated scores only" not in html and "treat the two runs as independent" not in html


# ------------------------------------------------------------------------------------------ labels and colours


def write_named_eval(folder: Path, model: str, kind: str, shift: float = 0.0) -> Path:
    """An eval run whose model is a folder named like the demo's (`.../models/vanilla`)."""
    losses, docs = doc_losses()
    write_eval_run(folder, losses + shift, docs, kind)
    results = pd.read_parquet(folder / "results.parquet").assign(model=model)
    write_results(results, folder)
    provenance = json.loads((folder / "provenance.json").read_text())
    provenance["model"]["name"] = model
    (folder / "provenance.json").write_text(json.dumps(provenance))
    return folder


def test_labels_name_each_model_once_and_the_synthetic_task_as_such(tmp_path: Path) -> None:
    runs = {}
    for shift, mode in enumerate(("vanilla", "myopic", "bigram")):
        runs[mode] = write_named_eval(tmp_path / mode / "eval", str(tmp_path / "models" / mode), mode, 0.1 * shift)
    synthetic = write_synthetic_run(tmp_path / "synthetic")
    vanilla, myopic, bigram = (str(runs[mode].parent) for mode in ("vanilla", "myopic", "bigram"))
    run_compare(vanilla, myopic, bigram, tmp_path / "out", n_boot=N_BOOT, synthetic=str(synthetic))
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert title == "probe-future report: vanilla, myopic, bigram, synthetic task", title
    assert "vanilla: vanilla" not in html and "myopic: myopic" not in html
    limitations = html[html.index('id="limitations"') :]
    assert not re.search(r"<li>\s*vanilla:", limitations)  # the synthetic model is not a language model "vanilla"
    assert "synthetic task (synthetic)" in limitations


def test_model_labels() -> None:
    assert figures.model_label("vanilla", "/x/models/vanilla") == "vanilla"
    assert figures.model_label("pretrained", "gpt2") == "pretrained (gpt2)"
    assert figures.model_label("random-init", "/x/models/vanilla (random init)") == "random-init control of vanilla"


def test_no_two_series_share_a_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    monkeypatch.setattr(figures, "_data_uri", lambda figure: drawn.append(figure) or "data:")
    frames = {
        "vanilla": top1_frame(PLANTED, "vanilla").assign(model="/x/models/vanilla"),
        "random-init": top1_frame(PLANTED, "random-init").assign(model="/x/models/vanilla (random init)"),
        "myopic": top1_frame(PLANTED, "myopic").assign(model="/x/models/myopic"),
    }
    sets = [
        figures.ProbeSet(figures.model_label(kind, str(frame["model"].iloc[0])), role, frame, None)  # type: ignore[arg-type]
        for kind, frame, role in (
            ("vanilla", frames["vanilla"], "vanilla"),
            ("random-init", frames["random-init"], None),
            ("myopic", frames["myopic"], "myopic"),
        )
    ]
    uri, best = figures.tau_figure(sets)
    assert uri == "data:" and len(best) == 3
    handles, labels = drawn[0].axes[0].get_legend_handles_labels()
    colors = {
        label: handle.lines[0].get_color()  # an errorbar container: its data line
        for handle, label in zip(handles, labels, strict=True)
        if hasattr(handle, "lines")
    }
    assert len(colors) == 3 and len(set(colors.values())) == 3, colors
    assert all("(layer 2, softmax)" in label for label in colors)  # the choice made on validation


def test_a_synthetic_task_model_is_not_listed_as_a_language_model(tmp_path: Path) -> None:
    """Any stage's run of a synthetic-task model (the gradient lens measures them too) is named as such."""
    from probes.runs import load_run

    model = tmp_path / "synthetic" / "vanilla"
    model.mkdir(parents=True)
    (model / "training.json").write_text(
        json.dumps({"architecture": "SyntheticModel", "mode": "vanilla", "steps": 6000, "batch_size": 32})
    )
    run = load_run(write_named_eval(tmp_path / "eval", str(model), "vanilla"))
    notes = report.limitations([report.Subject("vanilla", "vanilla", {"eval": run})], None)
    assert notes and all(note.startswith("synthetic task, vanilla (eval)") for note in notes), notes
    assert not any("GPT-2" in note for note in notes)
