"""Instruction data: reading JSONL conversations, and the loss mask over exactly the response tokens."""

import json

import pytest

from slimtune.data.batching import LABEL_PAD
from slimtune.data.instructions import Conversation, encode_conversation, read_conversations
from slimtune.errors import SlimtuneError
from tests.tiny_llama import make_tokenizer


def _labelled_text(tokenizer, feature) -> str:
    return tokenizer.decode([t for t in feature["labels"] if t != LABEL_PAD])


def _pair(prompt, response):
    return Conversation(({"role": "user", "content": prompt}, {"role": "assistant", "content": response}))


def test_loss_covers_exactly_the_response_and_its_end_of_turn():
    tokenizer = make_tokenizer()
    feature = encode_conversation(tokenizer, _pair("is it good? great film", "yes"))
    assert _labelled_text(tokenizer, feature) == "yes<|im_end|>"
    labelled = [i for i, t in enumerate(feature["labels"]) if t != LABEL_PAD]
    assert labelled == list(range(labelled[0], labelled[-1] + 1))  # one contiguous run
    assert [feature["input_ids"][i] for i in labelled] == [feature["labels"][i] for i in labelled]
    assert tokenizer.decode(feature["input_ids"][: labelled[0]]) == tokenizer.decode(feature["prompt_ids"])
    assert tokenizer.decode(feature["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert feature["answer"] == "yes"


def test_every_assistant_turn_of_a_chat_is_learned_and_nothing_else():
    tokenizer = make_tokenizer()
    chat = Conversation((
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello there"},
        {"role": "user", "content": "is it good?"},
        {"role": "assistant", "content": "no"},
    ))
    feature = encode_conversation(tokenizer, chat)
    assert _labelled_text(tokenizer, feature) == "hello there<|im_end|>no<|im_end|>"
    assert feature["answer"] == "no"
    assert tokenizer.decode(feature["prompt_ids"]).endswith("is it good?<|im_end|>\n<|im_start|>assistant\n")


def test_without_a_chat_template_the_response_and_eos_are_learned():
    tokenizer = make_tokenizer()
    tokenizer.chat_template = None
    feature = encode_conversation(tokenizer, _pair("is it good?", "yes"))
    assert _labelled_text(tokenizer, feature) == "yes<|im_end|>"
    assert tokenizer.decode(feature["input_ids"]).startswith("is it good?\nyes")


def test_pairs_and_chats_are_read(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n\n"
                    + json.dumps({"messages": [{"role": "user", "content": "c"},
                                               {"role": "assistant", "content": "d"}]}) + "\n")
    rows = read_conversations(path)
    assert [r.messages[-1]["content"] for r in rows] == ["b", "d"]
    assert [r.where for r in rows] == [f"{path}:1", f"{path}:3"]


@pytest.mark.parametrize("line,message", [
    ("{not json", "not valid JSON"),
    ('{"prompt": "a"}', 'expected "prompt" and "response", or "messages"'),
    ('{"prompt": "a", "response": " "}', "empty response"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "message 0 must be"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
    ('["a", "b"]', "expected a JSON object"),
])
def test_malformed_rows_are_reported_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" + line + "\n")
    with pytest.raises(SlimtuneError, match=f"{path}:2: .*{message}"):
        read_conversations(path)
