"""The probe job: `probe-future --model M --tau 1..5` end to end.

model + corpus -> activation store -> for every layer, softmax and least-squares probes for every
(τ, target) from one pass over that layer -> count baselines on the same test pairs -> document-level
bootstrap intervals -> `results.csv` / `results.parquet` + `provenance.json`.

Resumable: the store resumes shard by shard, each layer's fitted scores are kept in `fits/` as they
finish, and a rerun with the same arguments reuses both and writes identical numbers.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from simple_parsing import field
from tqdm.auto import tqdm

from probes.activations import ActivationStore, StoreFlags, StoreSettings, extract
from probes.config import Command, DataFlags, ModelFlags, OutputFlags, ProgressFlag, choose, names
from probes.corpus import TokenWindows, load_documents, make_windows, split_by_document
from probes.errors import UsageError
from probes.io import atomic_write, atomic_write_json
from probes.models import LoadedModel, load_model, random_init_like
from probes.probing.baselines import fit_skip_bigram, fit_unigram
from probes.probing.linear import SoftmaxConfig, fit_softmax, lstsq_grid
from probes.probing.metrics import PairScores, summarise
from probes.probing.targets import TARGETS, head_labels
from probes.provenance import provenance
from probes.results import PER_DOC_FILE, tidy, write_results
from probes.runs import BASELINES, CONTROL_KIND, PROBES, TEST_FRACTION, claim_folder, model_kind
from probes.specs import check_taus, parse_layers, tau_spec

CONTROLS = ("random",)


@dataclass(kw_only=True)
class ProbeConfig(ProgressFlag, OutputFlags, StoreFlags, DataFlags, ModelFlags):
    """`probe-future probe`: everything that defines a probe run; its fields are the command's flags."""

    tau: tuple[int, ...] = field(default=(1, 2, 3, 4, 5), type=tau_spec, nargs=None, metavar="SPEC")
    """offsets: 1..5 | 1,3,5 | 2 | 1..3,8 (each >= 1, < seq-len)"""
    target: tuple[str, ...] = field(default=TARGETS, type=names, nargs=None, metavar="NAMES")
    """token, model, or both (comma-separated)"""
    probe: tuple[str, ...] = field(default=PROBES, type=names, nargs=None, metavar="NAMES")
    """softmax, lstsq, or both (comma-separated)"""
    control: str | None = None
    """'random': also probe a random-init copy of the model"""
    test_fraction: float = TEST_FRACTION
    """share of documents held out for testing"""
    top_k: int = SoftmaxConfig.top_k
    """softmax classes per head (+ OTHER)"""
    n_boot: int = 1000
    """bootstrap resamples over test documents"""
    # Annotated Any: simple-parsing resolves every annotation in the modules of the ingredients as well.
    softmax: Any = field(default_factory=SoftmaxConfig, cmd=False)
    """the softmax probe's optimiser settings, a SoftmaxConfig (Python API only)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tau, self.target, self.probe = tau_spec(self.tau), names(self.target), names(self.probe)
        choose(self.probe, PROBES, "probe")
        choose(self.target, TARGETS, "target")
        if self.control is not None and self.control not in CONTROLS:
            raise UsageError(f"unknown control {self.control!r}: choose from {', '.join(CONTROLS)}")
        if not 0 < self.test_fraction < 1:
            raise UsageError("--test-fraction must be between 0 and 1")
        if self.n_boot < 200:
            raise UsageError("--n-boot must be at least 200")
        if self.top_k < 1:
            raise UsageError("--top-k must be at least 1")
        check_taus(self.tau, self.seq_len)

    def identity(self) -> dict[str, Any]:
        """The settings that change a number in the results (not where or how verbosely it runs)."""
        fields = dataclasses.asdict(self)
        for name in ("out", "overwrite", "progress", "device"):
            fields.pop(name)
        return json.loads(json.dumps(fields))  # tuples as lists: the form run.json stores


def final_decoder(model: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's own final norm and unembedding: final-layer residual -> next-token logits."""
    base = model.hf_model.base_model
    norm = next((getattr(base, name) for name in ("ln_f", "final_layer_norm", "norm") if hasattr(base, name)), None)
    head = model.hf_model.get_output_embeddings()
    if norm is None or head is None:
        raise UsageError(f"cannot find the final norm and unembedding of {model.architecture} for the lstsq probe")
    dtype = next(head.parameters()).dtype

    @torch.no_grad()
    def decode(residual: torch.Tensor) -> torch.Tensor:
        return head(norm(residual.to(model.device, dtype)))

    return decode


def _rows_of(windows: np.ndarray, seq_len: int) -> torch.Tensor:
    """Flattened row indices (w * T + t) of every position of the given windows."""
    return (torch.from_numpy(windows)[:, None] * seq_len + torch.arange(seq_len)).reshape(-1)


def _score_rows(
    scores: PairScores, groups: np.ndarray, n_train: int, base: dict[str, Any], n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """One row per metric with its document-bootstrap interval; `_docs` carries per-document sums and
    counts, so a later comparison of two models can resample the same documents for both (paired)."""
    docs, index = np.unique(groups, return_inverse=True)
    counts = np.bincount(index, minlength=len(docs))
    metrics = {"top1": scores.top1, "top5": scores.top5} | ({"ce_nats": scores.ce} if scores.ce is not None else {})
    rows = []
    for metric, (value, low, high) in summarise(scores, groups, n_boot=n_boot, seed=seed).items():
        sums = np.bincount(index, weights=np.asarray(metrics[metric], dtype=np.float64), minlength=len(docs))
        rows.append(
            {**base, "metric": metric, "value": value, "ci_low": low, "ci_high": high}
            | {"n_train": n_train, "n_test": len(scores), "n_test_docs": len(docs), "_docs": (docs, sums, counts)}
        )
    return rows


PER_DOC_KEYS = ["kind", "layer", "tau", "target", "probe", "metric"]


def _split_doc_rows(rows: list[dict[str, Any]], doc_names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Separate the aggregated rows from their per-document sums (a long table: one row per document)."""
    parts = []
    for row in rows:
        docs, sums, counts = row.pop("_docs")
        part = pd.DataFrame({"doc": [doc_names[i] for i in docs], "sum": sums, "count": counts})
        for key in PER_DOC_KEYS:
            part[key] = row[key]
        parts.append(part)
    columns = [*PER_DOC_KEYS, "doc", "sum", "count"]
    per_doc = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    per_doc["layer"] = per_doc["layer"].astype("Int64")
    per_doc["tau"] = per_doc["tau"].astype("Int64")
    return tidy(rows), per_doc


class StoreProber:
    """Fits and scores every probe and baseline of one model's store; one instance per model."""

    def __init__(
        self,
        store: ActivationStore,
        model: LoadedModel,
        config: ProbeConfig,
        kind: str,
        split: tuple[np.ndarray, np.ndarray],
        fits_dir: Path,
    ) -> None:
        self.store, self.model, self.config, self.kind = store, model, config, kind
        self.fits_dir = fits_dir
        self.seq_len = store.windows.seq_len
        self.taus = check_taus(config.tau, self.seq_len)
        self.train, self.test = split
        self.tokens = torch.from_numpy(store.windows.tokens)
        self.model_pred = store.model_pred()
        self.doc = torch.from_numpy(store.windows.doc_index)
        self.labels, self.heads = head_labels(self.tokens, self.model_pred, self.taus, list(config.target))
        self.train_rows = _rows_of(self.train, self.seq_len)
        self.test_rows = _rows_of(self.test, self.seq_len)
        self.doc_rows = self.doc.repeat_interleave(self.seq_len)

    def _base(self, layer: int | None, tau: int, target: str, probe: str) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "kind": self.kind,
            "layer": layer,
            "tau": tau,
            "target": target,
            "probe": probe,
            "seed": self.config.seed,
        }

    def _cached(self, name: str, compute: Callable[[], list[dict[str, Any]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rows and per-document sums of one unit of work, reused when a previous run finished it."""
        path, docs_path = self.fits_dir / f"{name}.parquet", self.fits_dir / f"{name}.docs.parquet"
        if path.exists() and docs_path.exists():
            return pd.read_parquet(path), pd.read_parquet(docs_path)
        frame, per_doc = _split_doc_rows(compute(), self.store.windows.doc_names)
        # The rows file is written last: its presence marks the unit as finished.
        atomic_write(docs_path, lambda tmp: per_doc.to_parquet(tmp, index=False))
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
        return frame, per_doc

    def baselines(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self._cached("baselines", self._baseline_rows)

    def _baseline_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        vocab = self.model.vocab_size
        current = self.tokens.reshape(-1)
        for head, (tau, target) in enumerate(self.heads):
            labels = self.labels[:, head]
            train = self.train_rows[labels[self.train_rows] >= 0]
            test = self.test_rows[labels[self.test_rows] >= 0]
            groups = self.doc_rows[test].numpy()
            fitted = {
                "unigram": fit_unigram(labels[train], vocab),
                "skip_bigram": fit_skip_bigram(current[train], labels[train], vocab),
            }
            for name, baseline in fitted.items():
                scores = baseline.score(current[test], labels[test])
                rows += _score_rows(scores, groups, len(train), self._base(None, tau, target, name), *self._boot())
            if tau == 1 and target == "token":
                # The model's own next-token accuracy: the ceiling a τ = 1 probe is measured against.
                own = self.model_pred.reshape(-1)[test] == labels[test]
                scores = PairScores(top1=own.numpy(), top5=own.numpy(), ce=None)
                base = self._base(self.model.n_layers, tau, target, "model-output")
                rows += [row for row in _score_rows(scores, groups, 0, base, *self._boot()) if row["metric"] == "top1"]
        return rows

    def _boot(self) -> tuple[int, int]:
        return self.config.n_boot, self.config.seed

    def layer(self, layer: int, final: torch.Tensor | None) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self._cached(f"layer-{layer:03d}", lambda: self._layer_rows(layer, final))

    def _layer_rows(self, layer: int, final: torch.Tensor | None) -> list[dict[str, Any]]:
        hidden = self.store.layer(layer)
        rows: list[dict[str, Any]] = []
        if "softmax" in self.config.probe:
            rows += self._softmax_rows(layer, hidden)
        if "lstsq" in self.config.probe and final is not None:
            rows += self._lstsq_rows(layer, hidden, final)
        return rows

    def _softmax_rows(self, layer: int, hidden: torch.Tensor) -> list[dict[str, Any]]:
        flat = hidden.reshape(-1, hidden.shape[-1])
        X_train, Y_train = flat[self.train_rows], self.labels[self.train_rows]
        settings = dataclasses.replace(
            self.config.softmax, top_k=self.config.top_k, seed=self.config.seed, device=self.model.device.type
        )
        probe = fit_softmax(X_train, Y_train, self.doc_rows[self.train_rows].numpy(), self.model.vocab_size, settings)
        Y_test = self.labels[self.test_rows]
        all_scores = probe.score(flat[self.test_rows], Y_test)
        rows: list[dict[str, Any]] = []
        for head, ((tau, target), scores) in enumerate(zip(self.heads, all_scores, strict=True)):
            groups = self.doc_rows[self.test_rows][Y_test[:, head] >= 0].numpy()
            n_train = int((Y_train[:, head] >= 0).sum())
            rows += _score_rows(scores, groups, n_train, self._base(layer, tau, target, "softmax"), *self._boot())
        return rows

    def _lstsq_rows(self, layer: int, hidden: torch.Tensor, final: torch.Tensor) -> list[dict[str, Any]]:
        scored = lstsq_grid(
            hidden[self.train],
            final[self.train],
            hidden[self.test],
            self.tokens[self.test],
            self.model_pred[self.test],
            self.taus,
            final_decoder(self.model),
            targets=self.config.target,
        )
        rows: list[dict[str, Any]] = []
        for (tau, target), scores in scored.items():
            pairs_per_window = self.seq_len - tau  # pairs (t, t + τ) inside one window
            groups = np.repeat(self.store.windows.doc_index[self.test], pairs_per_window)
            n_train = len(self.train) * pairs_per_window
            rows += _score_rows(scores, groups, n_train, self._base(layer, tau, target, "lstsq"), *self._boot())
        return rows

    def run(self, layers: Sequence[int], desc: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        parts = [self.baselines()]
        final = self.store.layer(self.model.n_layers) if "lstsq" in self.config.probe else None
        for layer in tqdm(layers, desc=desc, unit="layer", disable=not self.config.progress):
            parts.append(self.layer(layer, final))
        return (
            pd.concat([rows for rows, _ in parts], ignore_index=True),
            pd.concat([docs for _, docs in parts], ignore_index=True),
        )


def _prepare_out(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    if not claim_folder(out, "run.json", identity, "a probe run", overwrite):
        atomic_write_json(out / "run.json", identity)


def _store_for(
    model: LoadedModel, windows: TokenWindows, folder: Path, layers: Sequence[int], config: ProbeConfig
) -> ActivationStore:
    needed = sorted(set(layers) | ({model.n_layers} if "lstsq" in config.probe else set()))
    settings = StoreSettings(
        layers=tuple(needed), dtype=config.dtype, batch_size=config.batch_size, shard_windows=8 * config.batch_size
    )
    return extract(model, windows, folder, settings, progress=config.progress)


def run_probes(config: ProbeConfig, model: LoadedModel | None = None) -> pd.DataFrame:
    """Run the whole probe job and return the results table (also written to `config.out`)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(config.out)
    model = model or load_model(config.model, config.device)
    layers = parse_layers(config.layers, model.n_layers)
    windows = make_windows(
        load_documents(config.data), model.tokenizer, config.seq_len, max_tokens=config.max_tokens, seed=config.seed
    )
    split = split_by_document(windows, config.test_fraction, config.seed)
    identity = config.identity() | {"weights_hash": model.weights_hash, "data_hash": windows.fingerprint()}
    timings["load_seconds"] = time.perf_counter() - started
    _prepare_out(out, identity, config.overwrite)

    subjects: list[tuple[str, LoadedModel, Path]] = [(model_kind(model.name), model, out)]
    if config.control == "random":
        subjects.append((CONTROL_KIND, random_init_like(model, config.seed), out / "control-random"))
    frames, doc_frames = [], []
    for kind, subject, folder in subjects:
        mark = time.perf_counter()
        store = _store_for(subject, windows, folder / "activations", layers, config)
        timings[f"extract_seconds_{kind}"] = time.perf_counter() - mark
        mark = time.perf_counter()
        prober = StoreProber(store, subject, config, kind, split, folder / "fits")
        rows, per_doc = prober.run(layers, desc=f"probe {kind}")
        frames.append(rows)
        doc_frames.append(per_doc)
        timings[f"probe_seconds_{kind}"] = time.perf_counter() - mark
    results = tidy(pd.concat(frames, ignore_index=True))
    timings["total_seconds"] = time.perf_counter() - started
    per_doc = pd.concat(doc_frames, ignore_index=True)
    atomic_write(out / PER_DOC_FILE, lambda tmp: per_doc.to_parquet(tmp, index=False))
    write_results(results, out)
    atomic_write_json(
        out / "provenance.json",
        provenance(
            stage="probe",
            args=identity,
            model={"name": model.name, "architecture": model.architecture, "weights_hash": model.weights_hash},
            data={
                "spec": config.data,
                "data_hash": windows.fingerprint(),
                "n_windows": len(windows),
                "n_train_docs": int(len(np.unique(windows.doc_index[split[0]]))),
                "n_test_docs": int(len(np.unique(windows.doc_index[split[1]]))),
            },
            device=model.device.type,
            timings={name: round(value, 3) for name, value in timings.items()},
        ),
    )
    return results


def summary_table(results: pd.DataFrame, target: str = "token") -> pd.DataFrame:
    """Layer × τ top-1 of the best probe, with the best baseline as the last row (for the console)."""
    top1 = results[(results["metric"] == "top1") & (results["target"] == target)]
    main_kind = top1["kind"].iloc[0] if len(top1) else None
    top1 = top1[top1["kind"] == main_kind]
    probes = top1[top1["probe"].isin(PROBES)]
    best = probes.groupby(["layer", "tau"])["value"].max().unstack("tau")
    baselines = top1[top1["probe"].isin(BASELINES)].groupby("tau")["value"].max()
    best.index = [f"layer {layer}" for layer in best.index]
    best.loc["best baseline"] = baselines
    best.columns = [f"tau={tau}" for tau in best.columns]
    return best


def run_probe_command(config: ProbeConfig) -> int:
    results = run_probes(config)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
        print("top-1 accuracy for the token at t+tau (best probe per cell; 95% CIs in results.csv):")
        print(summary_table(results).to_string())
    print(f"results: {Path(config.out) / 'results.csv'}")
    return 0


COMMAND = Command(
    ProbeConfig,
    run_probe_command,
    help="future-token probes: how much does layer l at t know about the token at t+tau?",
)

__all__ = ["COMMAND", "ProbeConfig", "run_probes", "summary_table"]
