"""Shared fixtures: tiny random models saved as local Hugging Face folders, small corpora. All offline."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny test models gain nothing from threads, and oversubscribed threads make shared machines crawl;
# set before torch is imported so subprocesses started by tests inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

WORDS = (
    "the king and queen walk through the castle garden at night while the moon shines over the river "
    "a soldier speaks of war and peace and the people listen in silence before the storm breaks"
).split()


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; a test that asks for this runs on one and restores the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_gpt2(folder: Path, n_layer: int = 2, n_embd: int = 32, seed: int = 0) -> Path:
    """A random GPT-2 with the real GPT-2 vocabulary (so the offline GPT-2 tokenizer applies)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=2, n_positions=128, vocab_size=50257)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


def write_documents(folder: Path, n_docs: int = 12, words_per_doc: int = 300, seed: int = 0) -> Path:
    """A folder of small .txt documents of pseudo-English text (a document each)."""
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(words_per_doc)]
        (folder / f"doc-{index:03d}.txt").write_text(" ".join(words) + ".\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def text_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_documents(tmp_path_factory.mktemp("corpus") / "docs")
