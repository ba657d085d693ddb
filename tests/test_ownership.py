"""slimtune deletes only what it marked as its own, and commits an output directory in one step."""

import os

import pytest

import slimtune.ownership as ownership
from slimtune.atomic import write_json
from slimtune.errors import SlimtuneError
from slimtune.ownership import (MARKER, check_out, clean_leftovers, commit, mark, new_output, read_marker, recover,
                                remove_owned, temp_dir_for)


def _output(path, text: str, kind="run"):
    path.mkdir(parents=True)
    mark(path, kind)
    (path / "data.txt").write_text(text)
    return path


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_out_rules(tmp_path):
    assert check_out(tmp_path / "new", overwrite=False) is False
    (tmp_path / "empty").mkdir()
    assert check_out(tmp_path / "empty", overwrite=False) is False
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(SlimtuneError, match="holds files slimtune did not write"):
            check_out(tmp_path / "mine", overwrite=overwrite)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SlimtuneError, match="is a file"):
        check_out(tmp_path / "file", overwrite=True)
    with pytest.raises(SlimtuneError, match="file is a file, not a directory"):
        check_out(tmp_path / "file" / "sub" / "out", overwrite=False)
    _output(tmp_path / "run", "old")
    with pytest.raises(SlimtuneError, match="already holds a slimtune output; pass --overwrite"):
        check_out(tmp_path / "run", overwrite=False)
    assert check_out(tmp_path / "run", overwrite=True) is True
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_marker_slimtune_did_not_write_is_no_marker(tmp_path):
    (tmp_path / MARKER).write_text("[1, 2]")
    assert read_marker(tmp_path) is None
    with pytest.raises(SlimtuneError, match="refusing to delete"):
        remove_owned(tmp_path)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_commit_replaces_a_previous_output_and_leaves_nothing_beside_it(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(ownership, "_exchange", lambda a, b: False)
    final = _output(tmp_path / "out", "old")
    (tmp_path / "out.old").mkdir()  # the user's, named like the old scheme's temporaries
    (tmp_path / "out.tmp").mkdir()
    tmp = temp_dir_for(final, "run")
    (tmp / "data.txt").write_text("new")
    commit(tmp, final)
    assert (final / "data.txt").read_text() == "new"
    assert read_marker(final)["state"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.old", "out.tmp"]


def test_the_exchange_is_used_where_the_file_system_has_it(tmp_path):
    a, b = _output(tmp_path / "a", "a"), _output(tmp_path / "b", "b")
    if not ownership._exchange(a, b):
        pytest.skip("no renameat2 exchange on this system")
    assert (a / "data.txt").read_text() == "b" and (b / "data.txt").read_text() == "a"


def test_recover_finishes_a_commit_killed_between_its_two_renames(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership, "_exchange", lambda a, b: False)
    final = _output(tmp_path / "out", "old")
    tmp = temp_dir_for(final, "run")
    (tmp / "data.txt").write_text("new")
    monkeypatch.setattr(ownership, "_to_trash", _fail_on_call(ownership._to_trash, 1, after=True))  # old away
    with pytest.raises(KeyboardInterrupt):
        commit(tmp, final)
    monkeypatch.undo()
    assert not final.exists()
    recover(final)
    assert (final / "data.txt").read_text() == "new"


def test_recover_drops_the_old_output_an_exchange_swapped_out(tmp_path, monkeypatch):
    final = _output(tmp_path / "out", "old")
    tmp = temp_dir_for(final, "run")
    (tmp / "data.txt").write_text("new")
    monkeypatch.setattr(ownership, "_to_trash", _fail_on_call(ownership._to_trash, 1))
    with pytest.raises(KeyboardInterrupt):
        commit(tmp, final)
    monkeypatch.undo()
    if (tmp / "data.txt").read_text() != "old":
        pytest.skip("no renameat2 exchange on this system")
    recover(final)
    assert (final / "data.txt").read_text() == "new" and not tmp.exists()


def test_leftovers_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    final = tmp_path / "out"
    dead = temp_dir_for(final, "run")
    write_json(dead / MARKER, {**read_marker(dead), "pid": _dead_pid()})
    alive = temp_dir_for(final, "run")
    write_json(alive / MARKER, {**read_marker(alive), "pid": os.getppid()})
    users = tmp_path / ".out.slimtune-tmp-mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    clean_leftovers(final)
    assert not dead.exists() and alive.exists() and (users / "notes.txt").exists()


def test_new_output_removes_its_temporary_directory_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with new_output(tmp_path / "out", "merge") as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with new_output(tmp_path / "out", "merge") as tmp:
        (tmp / "model.bin").write_bytes(b"x")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "model.bin"]
    with pytest.raises(SlimtuneError, match="already holds a slimtune output; pass --overwrite"):
        with new_output(tmp_path / "out", "merge"):
            pass
    with new_output(tmp_path / "out", "merge", overwrite=True) as tmp:
        (tmp / "model2.bin").write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "model2.bin"]


def test_atomic_writes_leave_a_users_tmp_file_alone(tmp_path):
    (tmp_path / "metrics.json.tmp").write_text("the user's")
    write_json(tmp_path / "metrics.json", {"a": 1})
    assert (tmp_path / "metrics.json.tmp").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "metrics.json.tmp"]


def _fail_on_call(function, call: int, after: bool = False):
    """`function`, interrupted (as a kill would) at its `call`-th call, before or after doing its work."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call and not after:
            raise KeyboardInterrupt
        result = function(*args, **kwargs)
        if len(calls) == call:
            raise KeyboardInterrupt
        return result

    return wrapper
