"""Instruction data for causal-LM tuning: JSONL conversations, rendered and tokenised with a response mask.

A row is either {"prompt": ..., "response": ...} or {"messages": [{"role", "content"}, ...]}
(roles system / user / assistant). A pair is the conversation [user: prompt, assistant: response].

Rendering uses the tokenizer's chat template when it has one. The assistant turns are
located as character spans of the rendered text: a turn starts where the conversation
before it, rendered with the generation prompt, ends, and stops where the conversation
through it ends (trailing whitespace excluded), so the span holds the answer and the
template's end-of-turn marker, which teaches the model to stop. Without a template a
conversation is each turn's content on its own line, an assistant turn ending in the
EOS token. Tokens whose first character lies in a span are the response tokens: the
only ones the loss sees.
"""

from dataclasses import dataclass

from slimtune.data.batching import LABEL_PAD
from slimtune.data.files import open_text, parse_json
from slimtune.errors import SlimtuneError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Conversation:
    messages: tuple[dict, ...]  # {"role": ..., "content": ...}, the last one from the assistant when labelled
    source: str = ""
    line: int = 0

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def _messages(row, where: str) -> tuple[dict, ...]:
    if not isinstance(row, dict):
        raise SlimtuneError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise SlimtuneError(f"{where}: \"messages\" must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES \
                    or not isinstance(message.get("content"), str):
                raise SlimtuneError(f"{where}: message {i} must be {{\"role\": one of {list(ROLES)}, "
                                    f"\"content\": a string}}, got {message!r}")
        if not any(m["role"] == "assistant" for m in messages):
            raise SlimtuneError(f"{where}: the conversation has no assistant message to learn")
        return tuple({"role": m["role"], "content": m["content"]} for m in messages)
    if "prompt" in row and "response" in row:
        prompt, response = row["prompt"], row["response"]
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise SlimtuneError(f"{where}: \"prompt\" and \"response\" must be strings")
        if not response.strip():
            raise SlimtuneError(f"{where}: empty response")
        return ({"role": "user", "content": prompt}, {"role": "assistant", "content": response})
    raise SlimtuneError(f"{where}: expected \"prompt\" and \"response\", or \"messages\"; got keys {sorted(row)}")


def read_conversations(path) -> list[Conversation]:
    """Every non-blank line of a JSONL file (optionally .gz) as a conversation; errors name file:line."""
    rows = []
    with open_text(path) as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            row = parse_json(text, where)
            rows.append(Conversation(_messages(row, where), str(path), number))
    if not rows:
        raise SlimtuneError(f"{path}: no conversations")
    return rows


def _template(tokenizer, messages, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def render(tokenizer, messages) -> tuple[str, list[tuple[int, int]]]:
    """(text, character spans of the assistant turns)."""
    if not tokenizer.chat_template:
        text, spans = "", []
        for m in messages:
            if m["role"] == "assistant":
                spans.append((len(text), len(text) + len(m["content"]) + len(tokenizer.eos_token)))
                text += m["content"] + tokenizer.eos_token + "\n"
            else:
                text += m["content"] + "\n"
        return text, spans
    text, spans = _template(tokenizer, messages), []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, through = _template(tokenizer, messages[:i], True), _template(tokenizer, messages[: i + 1])
        if not (text.startswith(before) and text.startswith(through) and len(before) < len(through)):
            raise SlimtuneError("the tokenizer's chat template renders the start of a conversation differently "
                                "from the whole conversation, so the assistant turns cannot be located")
        spans.append((len(before), len(through.rstrip())))
    return text, spans


def prompt_text(tokenizer, messages) -> str:
    """The text a model continues to answer `messages` (which must not end with the answer)."""
    if not tokenizer.chat_template:
        return "".join(m["content"] + "\n" for m in messages)
    return _template(tokenizer, messages, True)


def encode_text(tokenizer, text: str, offsets: bool = False) -> dict:
    """Token ids of rendered text: a chat template writes its own special tokens; plain text gets the tokenizer's."""
    return tokenizer(text, add_special_tokens=not tokenizer.chat_template, return_offsets_mapping=offsets)


def encode_conversation(tokenizer, conversation: Conversation) -> dict:
    """input_ids [T], labels [T] (the token id on response tokens, LABEL_PAD elsewhere), the prompt before the
    last assistant turn and that turn's text (for generation-based scoring)."""
    text, spans = render(tokenizer, conversation.messages)
    encoded = encode_text(tokenizer, text, offsets=True)
    labels = [token if any(start <= first < end for start, end in spans) and last > first else LABEL_PAD
              for token, (first, last) in zip(encoded["input_ids"], encoded["offset_mapping"])]
    last_answer = max(i for i, m in enumerate(conversation.messages) if m["role"] == "assistant")
    prompt = encode_text(tokenizer, prompt_text(tokenizer, conversation.messages[:last_answer]))["input_ids"]
    return {"input_ids": list(encoded["input_ids"]), "labels": labels, "prompt_ids": list(prompt),
            "answer": conversation.messages[last_answer]["content"]}
