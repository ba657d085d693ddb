"""--threads on every command that computes, and its default: the cores this process may use, never more."""

import pytest
import torch

from slimtune.cli import build_parser, common, main

COMPUTING = ["train", "eval", "predict", "generate", "merge", "prune", "quantize", "serve", "plan", "compare"]


@pytest.fixture
def fresh_default(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    common.default_threads.cache_clear()
    yield monkeypatch
    common.default_threads.cache_clear()


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_every_computing_command_takes_threads_and_shows_its_default():
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in COMPUTING:
        flag = next((a for a in commands[name]._actions if a.dest == "threads"), None)
        assert flag is not None, name
        assert f"default here: {common.default_threads()}" in flag.help


def test_default_counts_physical_cores_of_the_affinity_mask(fresh_default):
    fresh_default.setattr(common.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 32, 33})
    fresh_default.setattr(common, "_core_of", lambda cpu: str(cpu % 32))  # cpu 32 is cpu 0's hyper-thread
    fresh_default.setattr(common, "_cgroup_cpu_limit", lambda: None)
    assert common.default_threads() == 4


def test_default_is_capped_and_within_a_container_quota(fresh_default):
    fresh_default.setattr(common.os, "sched_getaffinity", lambda pid: set(range(64)))
    fresh_default.setattr(common, "_cgroup_cpu_limit", lambda: None)
    assert common.default_threads() == common.THREADS_CAP
    common.default_threads.cache_clear()
    fresh_default.setattr(common, "_cgroup_cpu_limit", lambda: 2)
    assert common.default_threads() == 2


def test_omp_num_threads_decides_when_set(fresh_default):
    fresh_default.setenv("OMP_NUM_THREADS", "3")
    assert common.default_threads() == 3


@pytest.mark.parametrize("text,cpus", [("200000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None),
                                       ("garbage\n", None)])
def test_cgroup_quota_in_whole_cpus(tmp_path, text, cpus):
    (tmp_path / "cpu.max").write_text(text)
    assert common._cgroup_cpu_limit(str(tmp_path / "cpu.max")) == cpus
    assert common._cgroup_cpu_limit(str(tmp_path / "absent")) is None


def test_threads_is_applied_before_the_command_runs(tmp_path, capsys, restore_torch_threads):
    torch.set_num_threads(2)
    assert main(["eval", "--threads", "1", "--adapter", str(tmp_path / "none"), "--data", "x.tsv"]) == 2
    assert torch.get_num_threads() == 1


def test_threads_below_one_is_one_line_and_exit_2(capsys, restore_torch_threads):
    assert main(["predict", "--threads", "0", "--adapter", "x", "text"]) == 2
    err = capsys.readouterr().err
    assert err == "slimtune predict: error: --threads must be at least 1, got 0\n"
