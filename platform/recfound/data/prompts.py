"""How a record becomes model text: a generative prompt in three pieces, and embedding inputs.

A generative prompt is head + body + tail so that a long `input` (body) can be truncated on its
own while the instruction (head) and the options and answer cue (tail) always survive.
Embedding inputs start with the `<embed>` token, which the tokenizer step prepends as an id.
"""

from __future__ import annotations

from recfound.data.records import OPTION_LETTERS

EMBED_TOKEN = "<embed>"
ANSWER_CUE = "Answer:"


def generative_pieces(instruction: str, input_text: str, options: list[str] | None) -> tuple[str, str, str]:
    """(head, body, tail) of a generative prompt; their concatenation is the full prompt."""
    head = f"{instruction.strip()}\n\n"
    body = input_text.strip()
    tail = "\n\n" if body else ""
    if options:
        tail += "Options:\n" + "".join(f"{OPTION_LETTERS[i]}: {opt}\n" for i, opt in enumerate(options)) + "\n"
    return head, body, tail + ANSWER_CUE


def generative_prompt(instruction: str, input_text: str, options: list[str] | None) -> str:
    """The whole prompt text of a generative record (what the model sees before the answer)."""
    return "".join(generative_pieces(instruction, input_text, options))


def generative_response(output: str) -> str:
    """The response text the model learns to produce after the answer cue (a space, then the answer)."""
    return f" {output.strip()}"


def embedding_instruction(instruction: str) -> str:
    """The instruction part of an embedding query (its tokens may be excluded from pooling)."""
    return f"{instruction.strip()}\n"
