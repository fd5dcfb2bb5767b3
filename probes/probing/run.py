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
import os
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

from probes.activation_rows import LayerRows
from probes.activations import ActivationStore, StoreFlags, StoreSettings, check_forward, extract, load_subject
from probes.config import Command, DataFlags, ModelFlags, OutputFlags, ProgressFlag, choose, names
from probes.corpus import TokenWindows, load_documents, make_windows, split_by_document
from probes.distributed import Ranks, join, leave
from probes.errors import UsageError
from probes.io import atomic_write, atomic_write_json
from probes.models import LoadedModel, check_positions, random_init_like, resolve_device
from probes.precision import resolve_precision
from probes.probing.baselines import fit_baselines
from probes.probing.distributed import Subject, probe_subjects
from probes.probing.linear import LstsqMap, LstsqSums, SoftmaxConfig, fit_softmax
from probes.probing.metrics import PairScores, summarise
from probes.probing.rowviews import LabelView, RowView
from probes.probing.streaming import cache_in_memory, default_memory_gb, lstsq_sums, score_maps
from probes.probing.targets import TARGETS, row_labels, validation_split
from probes.provenance import provenance
from probes.results import PER_DOC_FILE, tidy, write_results
from probes.runs import BASELINES, CONTROL_KIND, PROBES, TEST_FRACTION, claim_folder, input_paths, model_kind
from probes.selection import VALIDATION, best_per
from probes.sharded import random_init_sharded
from probes.specs import check_taus, parse_layers, tau_spec

CONTROLS = ("random",)
# Bumped when what a run computes from the same arguments changes (2: add-k smoothing and validation scores chosen
# on the train-side validation documents; 3: least-squares maps from summed moments, and the softmax probe's bias
# inside its matrix product, both equal to float rounding), so a folder of an older run is never resumed with its
# old fits.
METHOD = 3


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
    memory: float | None = None
    """GB of activations one process may hold (default: a quarter of the RAM, shared by the processes of a
    machine); a layer larger than that is read from the store chunk by chunk (the numbers do not change)"""
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
        if self.memory is not None and self.memory < 0:
            raise UsageError(f"--memory must be >= 0 GB; got {self.memory}")
        check_taus(self.tau, self.seq_len)

    def identity(self) -> dict[str, Any]:
        """The settings that change a number in the results (not where or how verbosely it runs)."""
        fields = dataclasses.asdict(self)
        for name in ("out", "overwrite", "progress", "device", "memory"):
            fields.pop(name)
        if fields["precision"] in ("auto", "fp32"):  # auto is fp32 on CPUs; the store records what a GPU used
            fields.pop("precision")
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


def _local_processes() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _rows_of(windows: np.ndarray, seq_len: int) -> torch.Tensor:
    """Flattened row indices (w * T + t) of every position of the given windows."""
    return (torch.from_numpy(windows)[:, None] * seq_len + torch.arange(seq_len)).reshape(-1)


def _metrics(scores: PairScores) -> dict[str, np.ndarray]:
    return {"top1": scores.top1, "top5": scores.top5} | ({"ce_nats": scores.ce} if scores.ce is not None else {})


def _score_rows(
    scores: PairScores,
    groups: np.ndarray,
    n_train: int,
    base: dict[str, Any],
    n_boot: int,
    seed: int,
    validation: PairScores | None = None,
) -> list[dict[str, Any]]:
    """One row per metric with its document-bootstrap interval; `_docs` carries per-document sums and
    counts, so a later comparison of two models can resample the same documents for both (paired).
    `validation`: the same method refitted without the train-side validation documents and scored on them; its
    means go to `val_value`, what any choice among layers and probes is made on (never the test numbers)."""
    docs, index = np.unique(groups, return_inverse=True)
    counts = np.bincount(index, minlength=len(docs))
    metrics = _metrics(scores)
    held = _metrics(validation) if validation is not None and len(validation) else {}
    rows = []
    for metric, (value, low, high) in summarise(scores, groups, n_boot=n_boot, seed=seed).items():
        sums = np.bincount(index, weights=np.asarray(metrics[metric], dtype=np.float64), minlength=len(docs))
        val_value = float(np.mean(held[metric])) if metric in held else np.nan
        rows.append(
            {**base, "metric": metric, "value": value, "ci_low": low, "ci_high": high, "val_value": val_value}
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
        self.heads = [(tau, target) for tau in self.taus for target in config.target]
        self.train_rows = _rows_of(self.train, self.seq_len)
        self.test_rows = _rows_of(self.test, self.seq_len)
        self.doc_rows = self.doc.repeat_interleave(self.seq_len)
        # The train-side validation documents: the same ones for every probe and baseline (and the softmax
        # probe's early stopping); the smoothing and the choice of layer and probe are made on them.
        self.val_fraction = config.softmax.val_fraction
        fit, val = validation_split(store.windows.doc_index[self.train], self.val_fraction, config.seed)
        self.fit_windows, self.val_windows = self.train[fit], self.train[val]
        # Activations are read through lazy views (probes.probing.streaming); a layer is held whole only when
        # it (and the final layer the least-squares map needs) fits the memory budget.
        layers_at_once = 2 if "lstsq" in config.probe else 1
        budget = config.memory if config.memory is not None else default_memory_gb(_local_processes())
        self.in_memory = cache_in_memory(store.layer_nbytes(), layers_at_once, budget)
        self._final: LayerRows | None = None

    def _labels(self, rows: torch.Tensor, head: int | None = None) -> torch.Tensor:
        """Labels of the given flat rows: (n, Hh), or (n,) for one head."""
        heads = self.heads if head is None else [self.heads[head]]
        labels = row_labels(self.tokens, self.model_pred, heads, rows)
        return labels if head is None else labels[:, 0]

    def final_rows(self) -> LayerRows:
        """The final layer (the least-squares map's regression target), opened once per prober."""
        if self._final is None:
            self._final = self.store.rows(self.model.n_layers, in_memory=self.in_memory)
        return self._final

    def close(self) -> None:
        if self._final is not None:
            self._final.close()
            self._final = None

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
            train_labels, test_labels = self._labels(self.train_rows, head), self._labels(self.test_rows, head)
            train, y_train = self.train_rows[train_labels >= 0], train_labels[train_labels >= 0]
            test, y_test = self.test_rows[test_labels >= 0], test_labels[test_labels >= 0]
            groups = self.doc_rows[test].numpy()
            train_docs = self.doc_rows[train].numpy()
            fitted = fit_baselines(current[train], y_train, train_docs, vocab, self.val_fraction, self.config.seed)
            for name, baseline in fitted.models().items():
                scores = baseline.score(current[test], y_test)
                base = self._base(None, tau, target, name) | {"smoothing_k": fitted.k}
                validation = fitted.validation.get(name)
                rows += _score_rows(scores, groups, len(train), base, *self._boot(), validation=validation)
            if tau == 1 and target == "token":
                # The model's own next-token accuracy: the ceiling a τ = 1 probe is measured against.
                own = self.model_pred.reshape(-1)[test] == y_test
                scores = PairScores(top1=own.numpy(), top5=own.numpy(), ce=None)
                base = self._base(self.model.n_layers, tau, target, "model-output")
                rows += [row for row in _score_rows(scores, groups, 0, base, *self._boot()) if row["metric"] == "top1"]
        return rows

    def _boot(self) -> tuple[int, int]:
        return self.config.n_boot, self.config.seed

    def layer(self, layer: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        return self._cached(f"layer-{layer:03d}", lambda: self._layer_rows(layer))

    def _layer_rows(self, layer: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        with self.store.rows(layer, in_memory=self.in_memory) as reader:
            if "softmax" in self.config.probe:
                rows += self._softmax_rows(layer, reader)
            if "lstsq" in self.config.probe:
                rows += self._lstsq_rows(layer, reader, self.final_rows())
        return rows

    def _softmax_rows(self, layer: int, reader: LayerRows) -> list[dict[str, Any]]:
        train_rows, test_rows = self.train_rows.numpy(), self.test_rows.numpy()
        if self.in_memory:  # within the budget: tensors, as fast as holding the layer ever was
            X_train, X_test = reader.gather(train_rows), reader.gather(test_rows)
            Y_train = self._labels(self.train_rows)
        else:  # lazy views: one minibatch or chunk of rows read at a time (the same numbers)
            X_train, Y_train = RowView(reader, train_rows), LabelView(self._labels, train_rows, len(self.heads))
            X_test = RowView(reader, test_rows)
        settings = dataclasses.replace(
            self.config.softmax, top_k=self.config.top_k, seed=self.config.seed, device=self.model.device.type
        )
        probe = fit_softmax(X_train, Y_train, self.doc_rows[self.train_rows].numpy(), self.model.vocab_size, settings)  # type: ignore[arg-type]
        Y_test = self._labels(self.test_rows)
        all_scores = probe.score(X_test, Y_test)  # type: ignore[arg-type]
        # The probe was fitted without the validation documents (its early stopping looks at them): score it there.
        val_rows = _rows_of(self.val_windows, self.seq_len)
        validation: list[PairScores | None] = [None] * len(self.heads)
        if len(val_rows):
            validation = probe.score(RowView(reader, val_rows.numpy()), self._labels(val_rows))  # type: ignore[arg-type]
        rows: list[dict[str, Any]] = []
        for head, ((tau, target), scores) in enumerate(zip(self.heads, all_scores, strict=True)):
            groups = self.doc_rows[self.test_rows][Y_test[:, head] >= 0].numpy()
            n_train = len(self.train) * (self.seq_len - tau)  # train rows whose t + τ lies inside the window
            base = self._base(layer, tau, target, "softmax") | {"smoothing_k": probe.other_k[head]}
            rows += _score_rows(scores, groups, n_train, base, *self._boot(), validation=validation[head])
        return rows

    def _lstsq_rows(self, layer: int, reader: LayerRows, final: LayerRows) -> list[dict[str, Any]]:
        decode, device = final_decoder(self.model), self.model.device

        def sums(windows: np.ndarray) -> dict[int, LstsqSums]:
            return lstsq_sums(reader, final, windows, self.seq_len, self.taus, device)

        def score(maps: dict[int, LstsqMap], windows: np.ndarray) -> dict[tuple[int, str], PairScores]:
            return score_maps(maps, reader, windows, self.tokens, self.model_pred, decode, device, self.config.target)

        # The train documents' sums are those of the fit and the validation documents added: one pass gives the
        # map scored on the test documents and, for the choice of layer and probe, the map refitted without the
        # validation documents, scored on them.
        fit = sums(self.fit_windows)
        train = fit
        validation: dict[tuple[int, str], PairScores] = {}
        if len(self.val_windows):
            held = sums(self.val_windows)
            validation = score({tau: fit[tau].solve() for tau in self.taus}, self.val_windows)
            train = {tau: fit[tau] + held[tau] for tau in self.taus}
        scored = score({tau: train[tau].solve() for tau in self.taus}, self.test)
        rows: list[dict[str, Any]] = []
        for (tau, target), scores in scored.items():
            pairs_per_window = self.seq_len - tau  # pairs (t, t + τ) inside one window
            groups = np.repeat(self.store.windows.doc_index[self.test], pairs_per_window)
            n_train = len(self.train) * pairs_per_window
            base = self._base(layer, tau, target, "lstsq")
            rows += _score_rows(scores, groups, n_train, base, *self._boot(), validation=validation.get((tau, target)))
        return rows

    def run(self, layers: Sequence[int], desc: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        parts = [self.baselines()]
        try:
            for layer in tqdm(layers, desc=desc, unit="layer", disable=not self.config.progress):
                parts.append(self.layer(layer))
        finally:
            self.close()
        return (
            pd.concat([rows for rows, _ in parts], ignore_index=True),
            pd.concat([docs for _, docs in parts], ignore_index=True),
        )


def _prepare_out(out: Path, identity: dict[str, Any], config: ProbeConfig) -> None:
    inputs = input_paths(config.model, config.data)
    claim_folder(out, "probe", identity, overwrite=config.overwrite, inputs=inputs)


def _store_for(
    model: LoadedModel,
    windows: TokenWindows,
    folder: Path,
    layers: Sequence[int],
    config: ProbeConfig,
    ranks: Ranks | None = None,
) -> ActivationStore:
    needed = sorted(set(layers) | ({model.n_layers} if "lstsq" in config.probe else set()))
    settings = StoreSettings(
        layers=tuple(needed),
        dtype=config.dtype,
        batch_size=config.batch_size,
        shard_windows=8 * config.batch_size,
        precision=resolve_precision(config.precision, model.device),
    )
    return extract(model, windows, folder, settings, progress=config.progress, ranks=ranks)


def run_probes(config: ProbeConfig, model: LoadedModel | None = None) -> pd.DataFrame:
    """Run the whole probe job and return the results table (also written to `config.out`)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(config.out)
    ranks = join(resolve_device(config.device))  # rank 0 of 1 unless under torchrun (probing.distributed)
    if model is None:
        device = str(ranks.device) if ranks.enabled else config.device
        model = load_subject(dataclasses.replace(config, device=device), config.device_map)
    check_positions(model.hf_model, config.seq_len, model.name)
    check_forward(model)
    if "lstsq" in config.probe:
        final_decoder(model)  # a model without a final norm and unembedding is refused before any work
    layers = parse_layers(config.layers, model.n_layers)
    windows = make_windows(
        load_documents(config.data), model.tokenizer, config.seq_len, max_tokens=config.max_tokens, seed=config.seed
    )
    split = split_by_document(windows, config.test_fraction, config.seed)
    identity = config.identity() | {"weights_hash": model.weights_hash, "data_hash": windows.fingerprint()}
    identity["method"] = METHOD  # a folder written by an older method is refused, not resumed with its old fits
    timings["load_seconds"] = time.perf_counter() - started
    ranks.on_main(lambda: _prepare_out(out, identity, config))

    models: list[tuple[str, LoadedModel, Path]] = [(model_kind(model.name), model, out)]
    if config.control == "random":
        control = random_init_sharded if model.bridge is None else random_init_like
        models.append((CONTROL_KIND, control(model, config.seed), out / "control-random"))

    def subject(kind: str, loaded: LoadedModel, folder: Path) -> Subject:
        return Subject(
            kind,
            lambda: _store_for(loaded, windows, folder / "activations", layers, config, ranks),
            lambda store: StoreProber(store, loaded, config, kind, split, folder / "fits"),
        )

    subjects = [subject(kind, loaded, folder) for kind, loaded, folder in models]
    parts, rank_records = probe_subjects(subjects, layers, ranks, timings)
    results = tidy(pd.concat([rows for rows, _ in parts], ignore_index=True))
    timings["total_seconds"] = time.perf_counter() - started
    if not ranks.main:
        leave(ranks)
        return results
    per_doc = pd.concat([docs for _, docs in parts], ignore_index=True)
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
            smoothing=smoothing_record(results, config.softmax.val_fraction),
            selection=f"layer and probe choices (console table, report, benchmarks) use val_value: {VALIDATION}",
            world_size=ranks.world,
            ranks=rank_records,
        ),
    )
    leave(ranks)
    return results


def smoothing_record(results: pd.DataFrame, val_fraction: float) -> dict[str, Any]:
    """For provenance.json: the add-k constants chosen on the validation documents, per kind, probe and head."""
    from probes.probing.baselines import ADD_K_GRID

    record: dict[str, Any] = {
        "method": "add-k over the full vocabulary (unigram, the skip-bigram's fallback) or over the out-of-top-K "
        "tokens (the softmax probe's OTHER share); k from the grid minimises the cross-entropy of the train-side "
        f"validation documents ({val_fraction:g} of the train documents) under counts of the others",
        "grid": [ADD_K_GRID[0], ADD_K_GRID[-1], len(ADD_K_GRID)],
    }
    if "smoothing_k" not in results.columns:
        return record
    rows = results.dropna(subset=["smoothing_k"]).drop_duplicates(["kind", "layer", "tau", "target", "probe"])
    for row in rows.itertuples():
        where = "unigram" if row.probe in BASELINES else f"softmax OTHER, layer {int(row.layer)}"
        record.setdefault(str(row.kind), {}).setdefault(where, {})[f"tau={int(row.tau)} {row.target}"] = float(
            row.smoothing_k
        )
    return record


def _main_top1(results: pd.DataFrame, target: str) -> pd.DataFrame:
    """Top-1 rows of the studied model (not a control) for one target."""
    top1 = results[(results["metric"] == "top1") & (results["target"] == target)]
    main_kind = top1["kind"].iloc[0] if len(top1) else None
    return top1[top1["kind"] == main_kind]


def selected_per_tau(results: pd.DataFrame, target: str = "token") -> pd.DataFrame:
    """Per τ, the layer and probe with the best validation top-1, with its test top-1 (`value`)."""
    probes = _main_top1(results, target)
    return best_per(probes[probes["probe"].isin(PROBES)].dropna(subset=["layer"]), ["tau"], PROBES)


def summary_table(results: pd.DataFrame, target: str = "token") -> pd.DataFrame:
    """Layer × τ test top-1 of the probe chosen per cell, the baseline chosen per τ, and the layer and probe
    chosen per τ (for the console). Every choice is made on the train-side validation documents."""
    top1 = _main_top1(results, target)
    probes = top1[top1["probe"].isin(PROBES)].dropna(subset=["layer"])
    best = best_per(probes, ["layer", "tau"], PROBES).pivot_table(index="layer", columns="tau", values="value")
    baselines = best_per(top1[top1["probe"].isin(BASELINES)], ["tau"], BASELINES).set_index("tau")["value"]
    best.index = [f"layer {int(layer)}" for layer in best.index]
    best.loc["best baseline"] = baselines
    best.loc["selected layer"] = selected_per_tau(results, target).set_index("tau")["value"]
    best.columns = [f"tau={tau}" for tau in best.columns]
    return best


def run_probe_command(config: ProbeConfig) -> int:
    results = run_probes(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun rank 0 reports
    chosen = selected_per_tau(results)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
        print(
            "test top-1 for the token at t+tau; the probe of each cell, the best baseline and the selected layer "
            f"are chosen on the {chosen['chosen_on'].iloc[0] if len(chosen) else VALIDATION} "
            "(95% CIs in results.csv):"
        )
        print(summary_table(results).to_string())
    picks = "; ".join(f"tau={int(row.tau)}: layer {int(row.layer)} {row.probe}" for row in chosen.itertuples())
    print(f"selected layer and probe: {picks}")
    print(f"results: {Path(config.out) / 'results.csv'}")
    return 0


COMMAND = Command(
    ProbeConfig,
    run_probe_command,
    help="future-token probes: how much does layer l at t know about the token at t+tau?",
)

__all__ = ["COMMAND", "ProbeConfig", "run_probes", "summary_table"]
