"""TIES-merging (Yadav et al., 2023) of checkpoints that share a base, one tensor at a time, torch only.

For every tensor, with the task vectors tau_c = theta_c - base (c = 1..C), two methods:

`ties` (the default; equal to peft's `ties` with `majority_sign_method="total"` and unit weights):

- TRIM: in each tau_c keep the k = floor(density * numel) entries of largest magnitude and set the
  rest to 0 (peft's `magnitude_based_pruning`, same k; equal magnitudes are split as `torch.topk`
  splits them). density 1 keeps every entry.
- ELECT: the sign s = +1 where sum_c tau_c >= 0, else -1.
- MERGE: the mean of the tau_c entries whose sign equals s; a trimmed (zero) entry never agrees, and
  an entry no checkpoint agrees on gets 0 (peft's `disjoint_merge`).

`authors` (the RecFound authors' `merge/merge_moe.py` with `sparsify_method='magnitude'`):

- ELECT on the untrimmed vectors: s = sign(sum_c tau_c), which is 0 where the sum is exactly 0.
- COUNT n = the number of c whose sign(tau_c) equals s (before any trimming).
- ZERO the entries of each tau_c whose sign differs from s, then TRIM what remains as their
  sparsify's `magnitude` does: keep the entries at the first k places of
  `torch.argsort(|tau_c| as float32, descending=True)`, k = int(density * numel) (k = 0 is refused).
- MERGE: sum_c of the kept entries / (n + 1e-9).

Either result is base + merged change, computed in float64 and cast back to the base tensor's dtype
(for float32, bfloat16 and float16 tensors, one checkpoint at density 1 under `ties` comes back bit for
bit; float64 ones within a rounding error). The authors' script works in the file's dtype instead.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

_WORK_DTYPE = torch.float64


def check_density(density: float) -> None:
    """Refuse a density outside (0, 1]."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")


def state_mismatch(base: dict[str, Tensor], state: dict[str, Tensor]) -> str | None:
    """The first tensor where `state` differs from `base` in name or shape, described; None if they fit."""
    for name, tensor in base.items():
        if name not in state:
            return f"tensor {name!r} is missing (the base has it)"
        if state[name].shape != tensor.shape:
            return f"tensor {name!r} has shape {tuple(state[name].shape)}, the base {tuple(tensor.shape)}"
    extra = [name for name in state if name not in base]
    return f"tensor {extra[0]!r} is not in the base" if extra else None


def trim(taus: Tensor, density: float) -> Tensor:
    """Keep, in each `taus[c]`, the floor(density * numel) entries of largest magnitude; zero the rest."""
    if density >= 1:
        return taus
    flat = taus.reshape(len(taus), taus[0].numel())
    index = flat.abs().topk(int(density * flat.shape[1]), dim=1).indices
    return torch.zeros_like(flat).scatter_(1, index, flat.gather(1, index)).view_as(taus)


def trimmed_to_nothing(base: dict[str, Tensor], density: float) -> list[str]:
    """The tensors too small for `density`: their k = floor(density * numel) is 0, so the trim keeps none of
    their entries (`ties` leaves them at the base, as peft's does; `authors` refuses them)."""
    if density >= 1:
        return []
    return [name for name, tensor in base.items() if int(density * tensor.numel()) == 0]


def elect_sign(taus: Tensor) -> Tensor:
    """+1 where the task vectors sum to >= 0, else -1."""
    return torch.where(taus.sum(0) >= 0, 1.0, -1.0).to(taus.dtype)


def disjoint_mean(taus: Tensor, sign: Tensor) -> Tensor:
    """The mean over c of the entries of `taus[c]` whose sign equals `sign` (0 where none does)."""
    agree = taus.sign() == sign
    return (taus * agree).sum(0) / agree.sum(0).clamp(min=1)


def authors_trim(taus: Tensor, density: float) -> Tensor:
    """Each `taus[c]` with only the entries at the first int(density * numel) places of
    `torch.argsort(|taus[c]| as float32, descending=True)` kept: their sparsify's `magnitude` on CPU,
    the same call, so equal magnitudes are split as that (unstable) sort splits them."""
    if density >= 1:
        return taus
    kept = torch.zeros_like(taus)
    for tau, out in zip(taus, kept):
        flat = tau.reshape(-1)
        order = torch.argsort(flat.abs().float(), descending=True)[:int(density * flat.numel())]
        out.view(-1)[order] = flat[order]
    return kept


def running_sum(taus: Tensor) -> Tensor:
    """sum_c taus[c] added one c after the other, as the authors' script accumulates (torch's sum over a
    dimension may add in another order, which changes the last bit)."""
    total = torch.zeros_like(taus[0])
    for tau in taus:
        total += tau
    return total


def authors_change(taus: Tensor, density: float) -> Tensor:
    """The merged change of the authors' merge script (see the module doc)."""
    sign = running_sum(taus).sign()
    agree = taus.sign() == sign
    kept = authors_trim(torch.where(agree, taus, 0.0), density)
    return running_sum(kept) / (agree.sum(0).to(taus.dtype) + 1e-9)  # the count in float64, as 1e-9 needs


def ties_change(taus: Tensor, density: float) -> Tensor:
    """The merged change of standard TIES: trim, elect on the trimmed vectors, disjoint mean."""
    taus = trim(taus, density)
    return disjoint_mean(taus, elect_sign(taus))


METHODS = {"ties": ties_change, "authors": authors_change}


def check_method(method: str) -> None:
    """Refuse a merge method other than those of METHODS."""
    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}: use {' or '.join(map(repr, METHODS))}")


def ties_merge_tensor(base: Tensor, thetas: Sequence[Tensor], density: float = 0.8,
                      method: str = "ties") -> Tensor:
    """TIES-merge one tensor of several checkpoints onto its base by `method` ("ties" or "authors"; same
    shapes, no other checks)."""
    check_method(method)
    origin = base.to(_WORK_DTYPE)
    taus = torch.stack([theta.to(device=base.device, dtype=_WORK_DTYPE) - origin for theta in thetas])
    return (origin + METHODS[method](taus, density)).to(base.dtype)


def ties_merge(base: dict[str, Tensor], checkpoints: Sequence[dict[str, Tensor]], density: float = 0.8,
               method: str = "ties") -> dict[str, Tensor]:
    """TIES-merge `checkpoints` (each with the base's tensor names and shapes) onto `base`, tensor by tensor."""
    check_density(density)
    check_method(method)
    if not checkpoints:
        raise ValueError("TIES needs at least one checkpoint")
    for index, state in enumerate(checkpoints):
        problem = state_mismatch(base, state)
        if problem:
            raise ValueError(f"checkpoint {index}: {problem}")
    emptied = trimmed_to_nothing(base, density)
    if method == "authors" and emptied:
        name = emptied[0]
        raise ValueError(f"tensor {name!r} has {base[name].numel()} entries, of which density {density} keeps "
                         "none; the authors' merge refuses that (their sparsify asserts k > 0): raise the "
                         "density or use the method 'ties'")
    return {name: ties_merge_tensor(tensor, [state[name] for state in checkpoints], density, method)
            for name, tensor in base.items()}


def changed_fraction(base: dict[str, Tensor], merged: dict[str, Tensor]) -> float:
    """The fraction of all entries whose merged value differs from the base."""
    total = sum(tensor.numel() for tensor in base.values())
    changed = sum(int((merged[name] != tensor).sum()) for name, tensor in base.items())
    return changed / total if total else 0.0
