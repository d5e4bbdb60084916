"""Does a backbone copy in context? A capability check, not a timing benchmark.

The model reads `span + span` for spans of `--length` tokens: stretches of a corpus's texts (as the
pre-training stream lays them out), and tokens drawn uniformly from the vocabulary. Printed: the top-1
accuracy of its next-token predictions over the first copy and over the second (from the second token
of the copy on: its first token cannot be known). A model with induction heads predicts the second copy
almost perfectly, random tokens included; one without predicts it no better than the first, and random
tokens not at all. AVE (value extraction) answers with values copied out of the listing, which is why
docs/training.md measures its backbones here. Examples:

    python bench/in_context_copy.py --backbone .cache/runs/recfound-demo/backbone \\
        --tokenizer .cache/runs/recfound-demo/tokenizer --data .cache/demo/data
    python bench/in_context_copy.py --backbone smollm2 --tokenizer smollm2 --data .cache/demo/data

Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.data.corpus_text import corpus_texts  # noqa: E402
from recfound.data.tokenizer import load_tokenizer, resolve_tokenizer  # noqa: E402
from recfound.model.backbone import load_backbone  # noqa: E402
from recfound.model.pretrain import token_stream  # noqa: E402

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", required=True, help="preset, 'smollm2', .gguf or HF folder")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder, 'smollm2' or a .gguf")
    parser.add_argument("--data", help="dataset folder: text spans from its train split (else random spans only)")
    parser.add_argument("--spans", type=int, default=64, help="spans of each kind")
    parser.add_argument("--length", type=int, default=20, help="tokens per span")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.spans < 1 or args.length < 2:
        parser.error("--spans must be >= 1 and --length >= 2")
    return args


def copy_accuracy(model: torch.nn.Module, spans: torch.Tensor) -> tuple[float, float]:
    """(top-1 accuracy over the first copy, over the second) of `model` reading each row of `spans`
    [N, L] twice; both over positions 2..L of their copy, so that they count the same tokens."""
    length = spans.shape[1]
    doubled = torch.cat([spans, spans], dim=1)
    with torch.no_grad():
        predicted = model(input_ids=doubled).logits.argmax(-1)  # predicted[:, t] guesses doubled[:, t + 1]
    first = predicted[:, : length - 1] == doubled[:, 1:length]
    second = predicted[:, length: 2 * length - 1] == doubled[:, length + 1:]
    return first.float().mean().item(), second.float().mean().item()


def spans_of(args: argparse.Namespace, tokenizer_dir: str, tokenizer: Tokenizer, vocab_size: int
             ) -> dict[str, torch.Tensor]:
    """{'text': spans of the train texts' token stream (with --data), 'random': spans of tokens drawn
    uniformly from the vocabulary without its special tokens}, each [spans, length]."""
    ordinary = np.setdiff1d(np.arange(vocab_size), list(tokenizer.get_added_tokens_decoder()))
    rng = np.random.default_rng(args.seed)
    spans = {"random": torch.from_numpy(rng.choice(ordinary, size=(args.spans, args.length)))}
    if args.data:
        stream = token_stream(corpus_texts(args.data), tokenizer_dir, args.seed)
        if len(stream) <= args.length:
            raise ValueError(f"{args.data}: its train texts hold {len(stream)} tokens, too few for spans of "
                             f"{args.length}")
        starts = rng.integers(0, len(stream) - args.length, size=args.spans)
        spans = {"text": torch.from_numpy(np.stack([stream[s: s + args.length] for s in starts])), **spans}
    return spans


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tokenizer_dir = str(resolve_tokenizer(args.tokenizer))
        tokenizer, info = load_tokenizer(tokenizer_dir)
        model = load_backbone(args.backbone, info).model.eval()
        spans = spans_of(args, tokenizer_dir, tokenizer, info.vocab_size)
    except (OSError, ValueError, KeyError) as err:
        print(f"in_context_copy: error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    print(f"top-1 accuracy over a repeated span ({args.spans} spans of {args.length} tokens, {args.backbone})")
    print(f"{'spans':>6}  {'first copy':>10}  {'second copy':>11}")
    for kind, rows in spans.items():
        first, second = copy_accuracy(model, rows)
        print(f"{kind:>6}  {first:10.3f}  {second:11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
