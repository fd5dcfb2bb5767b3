"""Command-line flags shared by the stages, and their translation into typed settings.

Every stage that reads a model or a corpus takes the same flags with the same meaning, so a folder
written by one stage (`--out`) can be handed to the next.
"""

from __future__ import annotations

import argparse

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from probes.corpus import TokenWindows, load_documents, make_windows
from probes.errors import UsageError
from probes.specs import parse_layers

DEFAULT_SEQ_LEN = 64  # the paper's window length
DEFAULT_MAX_TOKENS = 20_000


def add_model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--model", required=required, help="hub name (gpt2, EleutherAI/pythia-70m, ...) or a local model folder"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default="bundled",
        help="bundled | a .txt file | a folder of .txt files | a .jsonl with a 'text' field | a hub dataset",
    )
    parser.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN, help="window length in tokens (default 64)")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"token budget, sampled as whole windows across the corpus (default {DEFAULT_MAX_TOKENS:,})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling, splits, fits and bootstraps")


def add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", default="all", help="all | 0..12 | 0,6,12 (0 = embeddings)")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="stored precision")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--overwrite", action="store_true", help="replace a store or results of another run")


def load_windows_for(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> TokenWindows:
    if args.seq_len < 2:
        raise UsageError("--seq-len must be at least 2")
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UsageError("--max-tokens must be positive")
    documents = load_documents(args.data)
    return make_windows(documents, tokenizer, args.seq_len, max_tokens=args.max_tokens, seed=args.seed)


def store_settings_from(args: argparse.Namespace, n_layers: int):
    from probes.activations import StoreSettings

    layers = tuple(parse_layers(args.layers, n_layers))
    shard_windows = max(args.batch_size, (64 // args.batch_size) * args.batch_size)
    return StoreSettings(layers=layers, dtype=args.dtype, batch_size=args.batch_size, shard_windows=shard_windows)
