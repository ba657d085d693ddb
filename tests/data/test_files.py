"""Data files are read whole and checked first: size (also once decompressed), gzip integrity, UTF-8, text."""

import gzip

import pytest

from slimtune.data import files
from slimtune.data.files import read_text
from slimtune.errors import SlimtuneError

ROWS = "sentence\tlabel\n" + "a fine film\tpos\n" * 200  # 3,215 bytes


def test_a_gzip_bomb_is_refused_before_it_is_unpacked_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_TEXT_BYTES", 1000)
    bomb = tmp_path / "rows.tsv.gz"
    bomb.write_bytes(gzip.compress(ROWS.encode()))
    assert bomb.stat().st_size < 1000
    with pytest.raises(SlimtuneError, match=r"more than 1,000 bytes of text once decompressed; .* split or sample"):
        read_text(bomb)


def test_a_plain_file_over_the_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_TEXT_BYTES", 1000)
    big = tmp_path / "rows.tsv"
    big.write_text(ROWS)
    with pytest.raises(SlimtuneError, match=r"rows.tsv: more than 1,000 bytes of text; data files are read whole"):
        read_text(big)


def test_files_at_the_bound_and_every_gzip_member_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_TEXT_BYTES", len(ROWS.encode()))
    plain = tmp_path / "rows.tsv"
    plain.write_text(ROWS)
    assert read_text(plain) == ROWS
    half = len(ROWS) // 2
    members = tmp_path / "rows.tsv.gz"  # two gzip members, as `cat a.gz b.gz` makes
    members.write_bytes(gzip.compress(ROWS[:half].encode()) + gzip.compress(ROWS[half:].encode()))
    assert read_text(members) == ROWS


def test_a_truncated_gzip_file_is_refused(tmp_path):
    cut = tmp_path / "rows.tsv.gz"
    cut.write_bytes(gzip.compress(ROWS.encode())[:-12])
    with pytest.raises(SlimtuneError, match="broken or truncated gzip data"):
        read_text(cut)
