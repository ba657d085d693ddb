"""Named-entity recognition: one IOB2 tag per word, read from and written to CoNLL files.

Labels are IOB2 tags whatever scheme the training file used; the file's scheme
is recorded so predictions are written back in it. A word is tagged from its
first sub-token, and predicted sequences are read the way conlleval reads them
(an I-X that does not continue an X entity opens one), so the entities printed
are the entities scored.
"""

import torch
import torch.nn.functional as F

from slimtune.data import tag_schemes
from slimtune.data.batching import LABEL_PAD
from slimtune.data.conll import Sentence, read_conll, write_with_predictions
from slimtune.data.word_windows import encode_words, stitch
from slimtune.data.words import split_words
from slimtune.errors import SlimtuneError
from slimtune.models.inference import feature_outputs
from slimtune.models.task_models import TokenClassifier
from slimtune.tasks.base import TAGGING, LabellingTask, refuse_options
from slimtune.tasks.entity_metrics import entity_scores


def _tag_ids(sentence: Sentence, index: dict[str, int], labels: list[str]) -> list[int]:
    ids = []
    for tag, line in zip(sentence.tags, sentence.lines):
        if tag not in index:
            raise SlimtuneError(f"{sentence.source}:{line}: tag {tag!r} is not one of the model's labels {labels}")
        ids.append(index[tag])
    return ids


def _encode_sentences(sentences: list[list[str]], tokenizer, max_length: int) -> list[dict]:
    """Features for the non-empty sentences of words (`sentence` numbers them among those only)."""
    return encode_words([words for words in sentences if words], tokenizer, max_length)


def _sentence_tags(sentences: list[list[str]], features: list[dict], outputs: list[torch.Tensor],
                   labels: list[str]) -> list[tuple[list, list]]:
    """(IOB2 tags, probabilities) per sentence of words, from each feature's logits [T_i, C];
    empty sentences get empty lists."""
    best = [logits.softmax(-1).max(-1) for logits in outputs]
    ids, probabilities = [b.indices.tolist() for b in best], [b.values.tolist() for b in best]
    filled = [i for i, words in enumerate(sentences) if words]
    out = [([], [])] * len(sentences)
    for i, sentence_ids, sentence_probs in zip(filled, stitch(features, ids), stitch(features, probabilities)):
        out[i] = (tag_schemes.repair([labels[j] for j in sentence_ids]), sentence_probs)
    return out


class NerTask(LabellingTask):
    name = "ner"
    primary_metric = "f1"
    kind = TAGGING
    mixable = True

    def read(self, path, scheme=None, **options):
        refuse_options(self.name, options)
        return read_conll(path, scheme)

    def label_names(self, rows):
        """O, then B- and I- of every entity type in the data, types in alphabetical order."""
        types = sorted({tag[2:] for row in rows for tag in row.tags if tag != "O"})
        return ["O"] + [f"{prefix}-{t}" for t in types for prefix in "BI"]

    def run_settings(self, train_rows):
        return {"scheme": train_rows[0].scheme}

    def encode(self, rows, tokenizer, labels, max_length):
        index = {name: i for i, name in enumerate(labels)}
        tag_ids = [_tag_ids(row, index, labels) for row in rows] if rows and rows[0].tags is not None else None
        return encode_words([row.words for row in rows], tokenizer, max_length, tag_ids)

    def build_model(self, backbone, labels):
        return TokenClassifier(backbone.model, len(labels))

    def loss(self, logits, labels):
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=LABEL_PAD)

    def outputs(self, model, features, pad_id, batch_size):
        return feature_outputs(model, features, pad_id, batch_size)

    def score(self, outputs, features, labels):
        ids = [logits.argmax(-1).tolist() for logits in outputs]
        gold = [[labels[i] for i in sentence] for sentence in stitch(features, [f["labels"] for f in features])]
        predicted = [tag_schemes.repair([labels[i] for i in sentence]) for sentence in stitch(features, ids)]
        gold_ids = torch.tensor([i for f in features for i in f["labels"]])  # [sum T_i]
        loss = F.cross_entropy(torch.cat(outputs), gold_ids, ignore_index=LABEL_PAD, reduction="sum").item()
        return {**entity_scores(gold, predicted), "loss": loss / max(int((gold_ids != LABEL_PAD).sum()), 1),
                "sentences": len(gold), "words": sum(map(len, gold))}

    def encode_texts(self, texts, tokenizer, max_length):
        return _encode_sentences([[w for w, _, _ in split_words(text)] for text in texts], tokenizer, max_length)

    def decode(self, texts, features, outputs, labels, config, scheme=None, **options):
        """Entities with character spans; `scheme` sets how the per-word tags are written."""
        refuse_options(self.name, options)
        scheme = scheme or config.get("scheme", tag_schemes.INTERNAL_SCHEME)
        split = [split_words(text) for text in texts]
        predictions = _sentence_tags([[w for w, _, _ in words] for words in split], features, outputs, labels)
        out = []
        for text, words, (tags, probabilities) in zip(texts, split, predictions):
            entities = []
            for span in tag_schemes.to_spans(tags, tag_schemes.INTERNAL_SCHEME):
                start, end = words[span.start][1], words[span.end - 1][2]
                score = sum(probabilities[span.start : span.end]) / (span.end - span.start)
                entities.append({"type": span.type, "start": start, "end": end, "text": text[start:end],
                                 "score": score})
            out.append({"entities": entities, "words": [w for w, _, _ in words],
                        "tags": tag_schemes.convert(tags, tag_schemes.INTERNAL_SCHEME, scheme)})
        return out

    def predict_file(self, loaded, in_path, out_path, batch_size, scheme=None, **options):
        """Append a predicted-tag column to a CoNLL file (written in the training data's scheme by default)."""
        refuse_options(self.name, options)
        scheme = scheme or loaded.config.get("scheme", tag_schemes.INTERNAL_SCHEME)
        sentences = read_conll(in_path, with_tags=False)
        tokenizer = loaded.backbone.tokenizer
        features = _encode_sentences([s.words for s in sentences], tokenizer, loaded.backbone.max_length)
        outputs = feature_outputs(loaded.model, features, tokenizer.pad_token_id, batch_size)
        by_line = {}
        for sentence, (tags, _) in zip(sentences, _sentence_tags([s.words for s in sentences], features, outputs,
                                                                 loaded.labels)):
            by_line.update(zip(sentence.lines, tag_schemes.convert(tags, tag_schemes.INTERNAL_SCHEME, scheme)))
        write_with_predictions(in_path, out_path, by_line)
        return len(sentences)
