"""Integer-set specifications such as `1..5`, `1,3,5`, `2` or `1..3,8`, parsed once at the boundary.

A spec becomes a sorted tuple of distinct ints, so equivalent specs (`1..3` and `3,1,2`) are one value
everywhere after the boundary, run identities included.
"""

from __future__ import annotations

from probes.errors import UsageError

MAX_SPEC_VALUES = 100_000  # far above any model's depth or window; checked before a range is expanded


def parse_int_spec(spec: str, what: str) -> tuple[int, ...]:
    """Parse `a..b`, `a,b,c`, `a` and comma-separated combinations into a sorted tuple of distinct ints."""
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
                if high - low + 1 > MAX_SPEC_VALUES - len(values):
                    raise UsageError(f"{what} specification {spec!r} names more than {MAX_SPEC_VALUES:,} values")
                values.update(range(low, high + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise UsageError(f"cannot read {what} specification {spec!r}: use forms like 1..5, 1,3,5 or 2") from None
    return tuple(sorted(values))


def tau_spec(spec: str | int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """τ values from a spec or a sequence of ints; each at least 1 (the window check comes with seq-len)."""
    if isinstance(spec, str):
        taus = parse_int_spec(spec, "tau")
    else:
        taus = tuple(sorted({int(tau) for tau in ([spec] if isinstance(spec, int) else spec)}))
    if not taus:
        raise UsageError("empty tau specification")
    if taus[0] < 1:
        raise UsageError(f"tau must satisfy 1 <= tau < seq-len; got {taus[0]}")
    return taus


def check_taus(taus: tuple[int, ...], seq_len: int) -> tuple[int, ...]:
    """τ values below the window length (a pair t, t+τ must fit in one window)."""
    bad = [tau for tau in taus if tau < 1 or tau >= seq_len]
    if bad:
        raise UsageError(f"tau must satisfy 1 <= tau < seq-len ({seq_len}); got {bad[0]}")
    return taus


def parse_taus(spec: str | tuple[int, ...], seq_len: int) -> tuple[int, ...]:
    return check_taus(tau_spec(spec), seq_len)


def layer_spec(spec: str) -> str:
    """The canonical form of a layer spec: `all`, or the layers as `0,1,2` (so equal specs name one run)."""
    if spec.strip().lower() == "all":
        return "all"
    return ",".join(str(layer) for layer in parse_int_spec(spec, "layer"))


def parse_layers(spec: str, n_layers: int) -> tuple[int, ...]:
    """Layers 0..n_layers (0 = embeddings, l = output of block l); `all` selects every one."""
    if spec.strip().lower() == "all":
        return tuple(range(n_layers + 1))
    layers = parse_int_spec(spec, "layer")
    bad = [layer for layer in layers if layer < 0 or layer > n_layers]
    if bad:
        raise UsageError(f"layer {bad[0]} does not exist: this model has layers 0..{n_layers} (0 = embeddings)")
    return layers
