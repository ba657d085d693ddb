"""The playground page and the API docs in a real headless browser (Playwright driving Chromium): they load with
no request leaving the machine; a classification shows its label bars, an NER adapter highlights entities, and a
streamed chat answer appears, the same as the API's; /docs and /redoc render offline. Skipped without a browser."""

import shutil
from pathlib import Path

import pytest

from tests.serve.conftest import running_server

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()),
                shutil.which("chromium"))


@pytest.fixture(scope="module")
def server(adapter_dirs, chat_dir):
    argv = ["--adapter", f"sst-qv={adapter_dirs['sst-qv']}", "--adapter", f"ner-qv={adapter_dirs['ner-qv']}",
            "--adapter", f"chat={chat_dir}", "--max-new-tokens", "64", "--quiet"]
    with running_server(argv) as client:
        yield client


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except sync_api.Error as e:
            pytest.skip(f"Chromium does not start here: {str(e).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A page that may reach only this server: every other request is recorded and refused."""
    base = str(server.base_url)
    context = browser.new_context()
    outside = []

    def only_local(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert outside == [], f"requests left the machine: {outside}"
    assert errors == [], f"script errors: {errors}"


def test_classification_bars_and_entities(page, server):
    page.goto(f"{server.base_url}/")
    page.select_option("#model", "sst-qv")
    page.fill("#input", "a gripping, funny film")
    page.click("#run")
    page.wait_for_selector(".bar", timeout=10_000)
    expected = server.post("/v1/predict", json={"adapter": "sst-qv", "inputs": ["a gripping, funny film"]}).json()
    labels = page.eval_on_selector_all(".bar", "bars => bars.map(b => b.dataset.label)")
    assert sorted(labels) == sorted(expected["outputs"][0]["scores"])
    assert page.eval_on_selector(".bar.top", "b => b.dataset.label") == expected["outputs"][0]["label"]

    text = "bob marley is of new york , and anna of paris"
    page.select_option("#model", "ner-qv")
    page.fill("#input", text)
    page.click("#run")
    page.wait_for_selector(".entities", timeout=10_000)
    entities = server.post("/v1/predict", json={"adapter": "ner-qv", "inputs": [text]}).json()["outputs"][0]["entities"]
    assert entities, "the adapter finds no entity here: the check would prove little"
    shown = page.eval_on_selector_all("mark", "marks => marks.map(m => [m.dataset.type, m.firstChild.textContent])")
    assert shown == [[e["type"], e["text"]] for e in entities]


def test_streamed_chat_answer_appears(page, server):
    page.goto(f"{server.base_url}/")
    page.select_option("#model", "chat")
    page.fill("#input", "hello")
    page.click("#run")
    page.wait_for_selector(".assistant[data-done='true']", timeout=20_000)
    expected = server.post("/v1/chat/completions", json={"model": "chat", "temperature": 0, "max_tokens": 64,
                                                         "messages": [{"role": "user", "content": "hello"}]}).json()
    answer = expected["choices"][0]["message"]["content"]
    assert answer and page.eval_on_selector(".assistant", "turn => turn.textContent") == answer


@pytest.mark.parametrize("path,selector", [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_api_docs_render_offline(page, server, path, selector):
    page.goto(f"{server.base_url}{path}")
    page.wait_for_selector(selector, timeout=20_000)
    assert "slimtune serve" in page.inner_text(selector)
