"""scripts/peft_roundtrip_smollm2.py on the tiny Llama: transformers + peft answer as slimtune does, greedily."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.runs.formats.conftest import make_run
from tests.tiny_llama import instruction_rows

pytest.importorskip("peft")
SCRIPT = Path(__file__).parents[3] / "scripts" / "peft_roundtrip_smollm2.py"


@pytest.mark.parametrize("method", ["lora", "prompt", "dora", "ia3", "lokr"])
def test_greedy_answers_agree(tmp_path, tiny_lm, method, capsys):
    spec = importlib.util.spec_from_file_location("peft_roundtrip", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run = make_run(tiny_lm, "causal-lm", method, tmp_path / "run")
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in instruction_rows(3, 0)))
    code = script.main([str(run), "--out", str(tmp_path / "peft"), "--data", str(data), "--prompts", "3",
                        "--max-new-tokens", "6"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3/3 greedy answers equal" in out
