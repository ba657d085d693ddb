"""Integrated Gradients (explain/attributions.py): completeness on the tiny model, and `slimtune explain`."""

import json

import pytest
import torch

pytest.importorskip("captum")

from slimtune.cli import main
from slimtune.errors import SlimtuneError
from slimtune.explain.attributions import baseline_ids, explain
from slimtune.explain.render import terminal_line
from slimtune.runs.adapter_files import load_adapter
from tests.serve.conftest import make_adapter


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    return {task: make_adapter(root / task, tiny_model, task, "lora", {"r": "2"}, seed=3)
            for task in ("classify", "ner", "multilabel")}


def _forward(loaded, ids, index):
    with torch.no_grad():
        return loaded.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                                       dtype=torch.long))[0, index]


def test_attributions_sum_to_the_logit_difference_from_the_baseline(adapters):
    loaded = load_adapter(adapters["classify"])
    text = "the film was good and the acting was lovely"
    [result] = explain(loaded, [text], steps=300)
    [e] = result["explanations"]
    assert e.target == result["prediction"]["label"]
    ids = loaded.backbone.tokenizer(text)["input_ids"]
    label = loaded.labels.index(e.target)
    reference = baseline_ids(ids, loaded.backbone.tokenizer)
    assert reference[0] == ids[0] and reference[-1] == ids[-1] and set(reference[1:-1]) == {0}
    difference = (_forward(loaded, ids, label) - _forward(loaded, reference, label)).item()
    assert e.score - e.baseline_score == pytest.approx(difference, abs=1e-5)
    assert abs(difference) > 1e-3  # a real difference to attribute
    assert sum(e.attributions) == pytest.approx(difference, abs=0.02 * abs(difference) + 1e-4)
    assert abs(e.delta) < 0.02 * abs(difference) + 1e-4
    assert e.attributions[0] == 0 and e.attributions[-1] == 0  # special tokens are the same in the baseline


def test_ner_explains_each_entity_and_multilabel_each_label(adapters):
    ner = load_adapter(adapters["ner"])
    [result] = explain(ner, ["anna went to paris and rome"], steps=20)
    assert len(result["explanations"]) == len(result["prediction"]["entities"])
    for e, entity in zip(result["explanations"], result["prediction"]["entities"]):
        assert e.target == f"{entity['type']}: {entity['text']}"
        assert sum(e.attributions) == pytest.approx(e.score - e.baseline_score, abs=abs(e.delta) + 1e-4)
    multi = load_adapter(adapters["multilabel"])
    [result] = explain(multi, ["dull plot"], steps=20)
    assert [e.target for e in result["explanations"]] == (result["prediction"]["labels"]
                                                          or [max(result["prediction"]["scores"],
                                                                  key=result["prediction"]["scores"].get)])


def test_cli_prints_markers_json_and_html(adapters, tmp_path, capsys):
    assert main(["explain", "--adapter", adapters["classify"], "--steps", "10", "the film was good"]) == 0
    out = capsys.readouterr().out
    assert "IG delta" in out and ("[+" in out or "[-" in out) and "\x1b[" not in out
    assert main(["explain", "--adapter", adapters["classify"], "--steps", "10", "--json", "--html",
                 str(tmp_path / "e.html"), "the film was good", "dull <b>plot</b>"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2 and records[0]["explanations"][0]["tokens"][0] == "[CLS]"
    page = (tmp_path / "e.html").read_text()
    assert page.count("<h2>") == 2 and "&lt;b&gt;plot&lt;/b&gt;" in page and "<b>plot" not in page


def test_colour_on_a_terminal(adapters):
    loaded = load_adapter(adapters["classify"])
    [result] = explain(loaded, ["the film was good"], steps=5)
    assert "\x1b[48;5;" in terminal_line(result["explanations"][0], colour=True)


@pytest.mark.parametrize("argv, message", [(["--steps", "0", "x"], "--steps"),
                                           (["--html", "/no/such/dir/e.html", "x"], "--html"),
                                           (["--adapter-missing"], "")])
def test_bad_inputs_are_one_line_exit_2(adapters, argv, message, capsys):
    if argv == ["--adapter-missing"]:
        assert main(["explain", "--adapter", "/no/such/run", "x"]) == 2
    else:
        assert main(["explain", "--adapter", adapters["classify"], *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_long_texts_run_the_path_in_bounded_passes_with_the_same_result(adapters, monkeypatch):
    from slimtune.explain import attributions

    loaded = load_adapter(adapters["classify"])
    [whole] = explain(loaded, ["the film was good and the acting was lovely"], steps=24)
    monkeypatch.setattr(attributions, "TOKENS_PER_PASS", 30)  # 2 or 3 rows of this text per pass
    [chunked] = explain(loaded, ["the film was good and the acting was lovely"], steps=24)
    a, b = whole["explanations"][0], chunked["explanations"][0]
    assert b.attributions == pytest.approx(a.attributions, abs=1e-6)
    assert b.delta == pytest.approx(a.delta, abs=1e-6)


def test_a_chosen_target_label_is_explained_and_an_unknown_one_refused(adapters):
    loaded = load_adapter(adapters["classify"])
    for label in loaded.labels:
        [result] = explain(loaded, ["the film was good"], steps=8, target=label)
        assert [e.target for e in result["explanations"]] == [label]
    with pytest.raises(SlimtuneError, match="not a label of this adapter"):
        explain(loaded, ["the film was good"], steps=8, target="joy")
    with pytest.raises(SlimtuneError, match="ner explains each entity"):
        explain(load_adapter(adapters["ner"]), ["anna went to paris"], steps=8, target="PER")
