"""The texts a model sees for a dataset split, used to train a corpus tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from recfound.data.prompts import embedding_instruction, generative_prompt, generative_response
from recfound.data.reader import iter_records, task_files
from recfound.tasks import Kind, get_task


def corpus_texts(root: Path | str, split: str = "train") -> Iterator[str]:
    """Every prompt, response, query and document of a split, rendered as the model sees them."""
    for name, path in task_files(root, split).items():
        task = get_task(name)
        for record in iter_records(path, task):
            if task.kind is Kind.GENERATIVE:
                yield generative_prompt(record["instruction"], record["input"], record["options"])
                yield generative_response(record["output"])
            else:
                yield embedding_instruction(record["instruction"]) + record["query"]
                yield record["positive"]
                yield from record["negatives"]
