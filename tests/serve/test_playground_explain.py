"""The playground's Explain action in a real headless browser (Playwright driving Chromium, as test_playground.py):
each token is shown with the attribution POST /v1/explain gives it, coloured green (for) or red (against) by its
share of the largest; the action is hidden for chat models. Skipped without a browser or captum."""

import re

import pytest

pytest.importorskip("captum")

from tests.serve.conftest import running_server
from tests.serve.test_playground import browser, page  # noqa: F401  (fixtures: the browser, a machine-local page)


@pytest.fixture(scope="module")
def server(adapter_dirs, chat_dir):
    argv = ["--adapter", f"sst-qv={adapter_dirs['sst-qv']}", "--adapter", f"ner-qv={adapter_dirs['ner-qv']}",
            "--adapter", f"chat={chat_dir}", "--quiet"]
    with running_server(argv) as client:
        yield client


def shown_explanations(page) -> list[dict]:
    return page.eval_on_selector_all(".explanation", """items => items.map(item => ({
        target: item.dataset.target,
        tokens: [...item.querySelectorAll('.token')].map(t => t.textContent),
        attributions: [...item.querySelectorAll('.token')].map(t => Number(t.dataset.attribution)),
        colours: [...item.querySelectorAll('.token')].map(t => getComputedStyle(t).backgroundColor)}))""")


def rgba(colour: str) -> tuple[int, int, int, float]:
    r, g, b, *a = re.findall(r"[\d.]+", colour)
    return int(r), int(g), int(b), float(a[0]) if a else 1.0


@pytest.mark.parametrize("adapter, text", [("sst-qv", "a gripping, funny film"),
                                           ("ner-qv", "bob marley is of new york , and anna of paris")])
def test_explain_highlights_tokens_by_attribution(page, server, adapter, text):  # noqa: F811
    page.goto(f"{server.base_url}/")
    page.select_option("#model", adapter)
    page.fill("#input", text)
    page.click("#explain")
    page.wait_for_selector(".explanation .token", timeout=20_000)
    expected = server.post("/v1/explain", json={"adapter": adapter, "inputs": [text]}).json()["outputs"][0]
    shown = shown_explanations(page)
    assert [s["target"] for s in shown] == [e["target"] for e in expected["explanations"]]
    for s, e in zip(shown, expected["explanations"], strict=True):
        assert s["tokens"] == [t.removeprefix("##") for t in e["tokens"]]
        assert s["attributions"] == e["attributions"]
        peak = max(abs(v) for v in e["attributions"])
        for value, colour in zip(e["attributions"], s["colours"]):
            r, g, b, alpha = rgba(colour)
            assert (g > r) == (value >= 0), (value, colour)  # green for, red against
            assert alpha == pytest.approx(abs(value) / peak, abs=1 / 255 + 1e-3)  # the browser keeps 8 bits


def test_explain_is_hidden_for_chat_and_errors_are_shown(page, server):  # noqa: F811
    page.goto(f"{server.base_url}/")
    page.select_option("#model", "chat")
    assert not page.is_visible("#explain")
    page.select_option("#model", "ner-qv")
    assert page.is_visible("#explain")
    page.fill("#input", "word " * 300)
    page.click("#explain")
    page.wait_for_selector(".error", timeout=20_000)
    assert "too long to explain" in page.inner_text(".error")
