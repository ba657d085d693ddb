import json

import pytest

from slimtune.errors import SlimtuneError
from slimtune.models.loading import load_backbone
from slimtune.runs.train import TrainRequest, train
from slimtune.tasks import get_task
from slimtune.training.config import TrainConfig
from tests.conftest import ner_sentences, write_conll

NER = get_task("ner")


def test_labels_are_o_then_b_and_i_of_every_type(toy_ner_data):
    rows = NER.read(toy_ner_data["train"])
    assert NER.label_names(rows) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert NER.run_settings(rows) == {"scheme": "iob2"}


def test_table_flags_are_refused(toy_ner_data):
    with pytest.raises(SlimtuneError, match="--text-col does not apply to task ner"):
        NER.read(toy_ner_data["train"], text_col="sentence", scheme=None)
    with pytest.raises(SlimtuneError, match="--scheme does not apply to task classify"):
        get_task("classify").read(toy_ner_data["train"], scheme="iob2")


def test_a_tag_unknown_to_the_model_names_its_line(tiny_model, tmp_path):
    path = write_conll(tmp_path / "dev.conll", [[("the", "O"), ("acme", "B-ORG")]])
    with pytest.raises(SlimtuneError, match=r"dev.conll:4: tag 'B-ORG' is not one of the model's labels"):
        NER.encode(NER.read(path), load_backbone(tiny_model).tokenizer, ["O", "B-PER", "I-PER"], 64)


def test_training_learns_the_toy_task_and_records_labels_and_scheme(tiny_model, toy_ner_data, tmp_path):
    config = TrainConfig(epochs=6, batch_size=8, lr=3e-3, patience=0, seed=7)
    summary = train(TrainRequest(task="ner", method="full", train_path=toy_ner_data["train"],
                                 dev_path=toy_ner_data["dev"], out_dir=str(tmp_path / "run"), model=tiny_model,
                                 read_options={"scheme": None}, config=config))
    assert summary["best_dev_f1"] >= 0.8
    saved = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert saved["scheme"] == "iob2" and saved["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_evaluation_with_windows_scores_every_word(tiny_model, tmp_path):
    backbone = load_backbone(tiny_model, max_length=6)
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    sentences = ner_sentences(5, 4)
    long_sentence = [word for sentence in sentences for word in sentence]
    rows = NER.read(write_conll(tmp_path / "d.conll", sentences + [long_sentence]))
    features = NER.encode(rows, backbone.tokenizer, labels, backbone.max_length)
    assert len(features) > 2 * len(rows)
    metrics = NER.evaluate(NER.build_model(backbone, labels), features, 0, 4, labels)
    assert metrics["sentences"] == 6 and metrics["words"] == 2 * len(long_sentence)
