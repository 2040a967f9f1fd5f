"""Batch-invariant linear layers on CPUs whose matrix kernels round by batch shape.

Why: the determinism contract (a prompt decodes to the same bits whatever it
is batched with) needs every row of a linear layer's output to be computed
the same way whatever the number of rows M. On CPUs without bf16 matrix
units that held here on one thread. On a Xeon with AMX (measured 2026-12-01,
torch 2.13, oneDNN's AMX bf16 kernels, one thread) it does not: the kernel
chooses its blocking from M, so a row's result changes with the batch's size
at K >= 1,024 (K = 64 was invariant), e.g. ``x @ W.T`` for a 1,024 x 3,072
layer differed between M = 37 and M = 64 for the same row, and no padding
rule (multiples of 16, 32 or 64 rows) made it invariant. With M fixed, a row's
result depended neither on its position nor on the other rows (measured at
M = 16, 32 and 64 on 1,024 x 3,072, 3,072 x 1,024 and 1,024 x 151,936).

How: :func:`probe_linear_invariance` runs each distinct linear shape of a
model (plain ``nn.Linear`` through ``F.linear``; bitsandbytes, quanto and any
other layer with ``in_features``/``out_features`` through its own forward,
which a layer that refuses is recorded as "not probed", never as invariant)
at several M and compares each row with the same row computed in a
larger batch. Where any shape differs, :func:`fixed_row_linears` makes every
linear layer run in chunks of exactly ``CHUNK_ROWS`` rows (the last chunk
padded with zeros, the padding dropped), so every call has one shape. The
cost is the padding: a 40-row decode step runs as 48 rows. Attention's
batched products (``bmm`` over rows x heads) are not probed here: above
oneDNN's size threshold they were invariant to the batch count, below it
torch takes another kernel, which rows batching avoids by padding small
groups (harness.decode.rows._group_pad). Where the probe finds every shape invariant nothing
is wrapped. Either way the verdict goes to the manifest (engine note), and
the identical rung still checks the outcome.
"""

from __future__ import annotations

from contextlib import contextmanager

from harness.core.noise import once_each
from harness.models.records import LinearInvariance

CHUNK_ROWS = 48
"""Rows per linear call when chunking: a constant of the harness (not of a run), so an output does not depend on
``--batch-size`` either. 48 is the default batch size, so a decode step of a full batch is one call; a 1,024 x
151,936 bf16 head cost 1.12 ms per row at 48 rows, 0.93 at 64, 1.36 at 32 on the AMX Xeon (one thread), and a
44-row step costs 48 rows here against 64 with chunks of 64. At M = 48 too a row's result depended neither on its
position nor on the other rows (tested)."""

PROBE_ROWS = (2, 3, 17, 33, 37, 48, 64, 100)
"""Batch sizes the probe compares against a 160-row reference: below, inside and across the block boundaries
where the AMX kernels changed their blocking (32, 36, 64) and prefill-sized calls."""


def _linears(model):
    import torch

    return [m for m in model.modules() if type(m) is torch.nn.Linear]  # bitsandbytes layers are subclasses: not ours


def _other_linears(model) -> list:
    """Layers that compute a linear map but are not a plain ``nn.Linear``: bitsandbytes (subclasses of it), quanto's
    QLinear and anything else with ``in_features``/``out_features`` and a ``weight``."""
    import torch

    return [m for m in model.modules() if type(m) is not torch.nn.Linear
            and hasattr(m, "in_features") and hasattr(m, "out_features") and hasattr(m, "weight")]


def _input_dtype(model, m):
    import torch

    w = getattr(m, "weight", None)
    dt = getattr(w, "dtype", None)
    # Quantized weights are int8/uint8 (or packed): the activations come in the model's compute dtype.
    if dt is None or not dt.is_floating_point:
        dt = getattr(model, "dtype", None) or torch.bfloat16
    return dt


def _probe_modules(model) -> tuple[list[str], list[str], int]:
    """(variant 'Type KxN', not probed 'Type: reason', shapes probed) of the non-plain linear layers, each distinct
    (type, in, out) once: the module's own forward at PROBE_ROWS rows against a 160-row batch, twice each."""
    import torch

    seen: dict[tuple[str, int, int], object] = {}
    for m in _other_linears(model):
        seen.setdefault((type(m).__name__, int(m.in_features), int(m.out_features)), m)
    variant, not_probed = [], []
    gen = torch.Generator().manual_seed(1)
    # once_each: bitsandbytes int8 logs its bf16 -> fp16 cast on every call (40 lines for SmolLM2's four shapes,
    # in every decode worker); shown once here. Inside a cell, the cell's own once_each counts them (cell.json
    # third_party_warnings); a worker process's count is not sent back.
    with torch.inference_mode(), once_each():
        for (name, k, n), m in seen.items():
            try:
                dev = next((p.device for p in m.parameters()), torch.device("cpu"))
                x = torch.randn(160, k, generator=gen)
                # One late row with large entries in a few columns (only the 160-row batch holds it): LLM.int8 picks
                # its outlier columns (|x| > 6) across the whole batch, so a row's result can depend on its batch
                # mates -- N(0, 1) inputs alone never reach the threshold and would pass it.
                x[-1, :: max(1, k // 8)] = 20.0
                x = x.to(dtype=_input_dtype(model, m), device=dev)
                full = m(x)
                # The same 160 rows again too: a kernel that is not even run-to-run reproducible shows here.
                same = [torch.equal(m(x), full)] + [torch.equal(m(x[:rows]), full[:rows]) for rows in PROBE_ROWS]
            except Exception as exc:  # noqa: BLE001 - a third-party layer may refuse a bare call; say so, claim nothing
                not_probed.append(f"{name}: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            if not all(same):
                variant.append(f"{name} {k}x{n}")
    return variant, sorted(set(not_probed)), len(seen) - len(not_probed)


def probe_linear_invariance(model) -> LinearInvariance:
    """Compare each row of every distinct linear shape at PROBE_ROWS batch sizes with a 160-row batch (seeded)."""
    import torch

    shapes: dict[tuple[int, int, torch.dtype], torch.nn.Linear] = {}
    for m in _linears(model):
        shapes.setdefault((m.in_features, m.out_features, m.weight.dtype), m)
    gen = torch.Generator().manual_seed(0)
    variant = []
    with torch.inference_mode():
        for (k, n, dtype), m in shapes.items():
            x = torch.randn(160, k, generator=gen).to(dtype=dtype, device=m.weight.device)
            full = torch.nn.functional.linear(x, m.weight, m.bias)
            if not all(torch.equal(torch.nn.functional.linear(x[:rows], m.weight, m.bias), full[:rows])
                       for rows in PROBE_ROWS):
                variant.append(f"{k}x{n} {str(dtype).removeprefix('torch.')}")
    others, not_probed, probed = _probe_modules(model)
    # ``invariant`` is only claimed when every computing layer was probed: quantized layers count too (issue 30).
    return LinearInvariance(not variant and not others and not not_probed, len(shapes) + probed, tuple(variant),
                            CHUNK_ROWS if variant else None, tuple(others), tuple(not_probed))


def _chunked_forward(module, rows: int):
    import torch

    def forward(x):
        flat = x.reshape(-1, x.shape[-1])
        m = flat.shape[0]
        pad = -m % rows
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad, flat.shape[1])])
        out = torch.cat([torch.nn.functional.linear(flat[i : i + rows], module.weight, module.bias)
                         for i in range(0, flat.shape[0], rows)])
        return out[:m].reshape(*x.shape[:-1], out.shape[-1])

    return forward


@contextmanager
def fixed_row_linears(model, verdict: LinearInvariance | None):
    """Every plain ``nn.Linear`` of ``model`` runs in chunks of ``verdict.chunk_rows`` rows inside the block.

    Nothing is wrapped when ``verdict`` is None or invariant. The instance's own ``forward`` is restored on exit.
    """
    if verdict is None or verdict.chunk_rows is None:
        yield
        return
    wrapped = []
    try:
        for m in _linears(model):
            wrapped.append((m, m.__dict__.get("forward")))
            m.forward = _chunked_forward(m, verdict.chunk_rows)
        yield
    finally:
        for m, own in wrapped:
            if own is None:
                del m.forward
            else:
                m.forward = own


@contextmanager
def invariant_linears(loaded):
    """:func:`fixed_row_linears` for a loaded model with its verdict, probed at the first use and kept on
    ``loaded.linear_invariance`` (for the manifest)."""
    if loaded.linear_invariance is None:
        loaded.linear_invariance = probe_linear_invariance(loaded.model)
    with fixed_row_linears(loaded.model, loaded.linear_invariance):
        yield
