"""The task registry holds the paper's 13 tasks with their kinds, metrics and our own wordings."""

from __future__ import annotations

import pytest

from recfound.tasks import AnswerType, Kind, Task, all_tasks, get_task, task_index, task_names

PAPER = {  # task: (kind, metric, answer type), from the paper's evaluation (Tables 2 and 3)
    "U2I": ("embedding", "mrr@20", "none"), "Q2I": ("embedding", "mrr@20", "none"),
    "I2I": ("embedding", "ndcg@20", "none"),
    "QR": ("generative", "bertscore_f1", "free_text"), "AVE": ("generative", "triple_f1", "attribute_json"),
    "AG": ("generative", "bertscore_f1", "free_text"), "SR": ("generative", "recall@1", "option_letter"),
    "SA": ("generative", "macro_f1", "option_letter"), "UP": ("generative", "bertscore_f1", "free_text"),
    "AP": ("generative", "f1_yes", "yes_no"), "PRP": ("generative", "macro_f1", "option_letter"),
    "PM": ("generative", "f1_yes", "yes_no"), "IP": ("generative", "bertscore_f1", "free_text"),
}


def test_the_thirteen_tasks():
    assert {t.name: (t.kind.value, t.metric, t.answer_type.value) for t in all_tasks()} == PAPER
    assert task_names(Kind.EMBEDDING) == ["U2I", "Q2I", "I2I"]
    assert len(task_names("generative")) == 10


def test_wordings_are_ours_and_distinct():
    paper_text = ("Represent this user query to find a matching item",
                  "Given the title of two products, predict if the two products are similar")
    for task in all_tasks():
        assert len(task.instructions) >= 3 and len(set(task.instructions)) == len(task.instructions)
        assert not any(p.lower() in w.lower() for p in paper_text for w in task.instructions)


def test_task_index_is_the_registry_position():
    assert [task_index(t.name) for t in all_tasks()] == list(range(13))


def test_lookup_errors_list_the_known_tasks():
    with pytest.raises(KeyError, match="unknown task 'XX'; known tasks: U2I, Q2I"):
        get_task("XX")


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="ctr"), "upper-case identifier"),
    (dict(instructions=("a", "b")), "at least 3 instruction wordings"),
    (dict(answer_type=AnswerType.NONE), "only they, have answer type 'none'"),
    (dict(answer_type=AnswerType.LABEL_SET), "needs labels"),
])
def test_bad_task_definitions(kwargs, message):
    spec = dict(name="CTR", kind=Kind.GENERATIVE, description="d", metric="m", answer_type=AnswerType.FREE_TEXT,
                instructions=("a", "b", "c")) | kwargs
    with pytest.raises(ValueError, match=message):
        Task(**spec)


def test_registering_an_existing_name_is_refused(extra_task):
    from recfound.tasks import register

    with pytest.raises(ValueError, match="already registered"):
        register(extra_task)
    assert task_index("CTR") == 13
