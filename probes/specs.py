"""Parsing of integer-set specifications such as `1..5`, `1,3,5`, `2` or `1..3,8`."""

from __future__ import annotations

from probes.errors import UsageError


def parse_int_spec(spec: str, what: str) -> list[int]:
    """Parse `a..b`, `a,b,c`, `a` and comma-separated combinations into a sorted list of distinct ints."""
    values: set[int] = set()
    text = spec.strip()
    if not text:
        raise UsageError(f"empty {what} specification")
    for part in text.split(","):
        part = part.strip()
        try:
            if ".." in part:
                low_text, high_text = part.split("..", 1)
                low, high = int(low_text), int(high_text)
                if low > high:
                    raise UsageError(f"{what} range {part!r} is empty ({low} > {high})")
                values.update(range(low, high + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise UsageError(f"cannot read {what} specification {spec!r}: use forms like 1..5, 1,3,5 or 2") from None
    return sorted(values)


def parse_taus(spec: str, seq_len: int) -> list[int]:
    """τ values: each at least 1 and below the window length (a pair t, t+τ must fit in one window)."""
    taus = parse_int_spec(spec, "tau")
    bad = [tau for tau in taus if tau < 1 or tau >= seq_len]
    if bad:
        raise UsageError(f"tau must satisfy 1 <= tau < seq-len ({seq_len}); got {bad[0]}")
    return taus


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Layers 0..n_layers (0 = embeddings, l = output of block l); `all` selects every one."""
    if spec.strip().lower() == "all":
        return list(range(n_layers + 1))
    layers = parse_int_spec(spec, "layer")
    bad = [layer for layer in layers if layer < 0 or layer > n_layers]
    if bad:
        raise UsageError(f"layer {bad[0]} does not exist: this model has layers 0..{n_layers} (0 = embeddings)")
    return layers
