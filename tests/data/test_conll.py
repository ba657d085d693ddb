import gzip

import pytest

from slimtune.data.conll import read_conll, write_with_predictions
from slimtune.errors import SlimtuneError
from tests.conftest import ner_sentences, write_conll

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG 
rejects VBZ B-VP O 
German JJ B-NP B-MISC 

Peter NNP B-NP B-PER 
Blackburn NNP I-NP I-PER 
"""


def test_reads_the_conll2003_layout(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text(CONLL)
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    assert sentences[1].lines == (7, 8) and sentences[0].scheme == "iob2" and sentences[0].source == str(path)


def test_reads_gzip_and_tabs_without_a_final_blank_line(tmp_path):
    path = tmp_path / "a.conll.gz"
    with gzip.open(path, "wt") as f:
        f.write("EU\tB-ORG\nrejects\tO\n\n\n\nPeter\tB-PER")
    assert [s.tags for s in read_conll(path)] == [["B-ORG", "O"], ["B-PER"]]


@pytest.mark.parametrize("scheme", ["iob1", "iobes"])
def test_other_schemes_are_detected_and_converted_to_iob2(tmp_path, scheme):
    sentences = ner_sentences(40, 3)
    read = read_conll(write_conll(tmp_path / "x.conll", sentences, scheme))
    assert [s.tags for s in read] == [[t for _, t in s] for s in sentences]
    assert {s.scheme for s in read} == {scheme}


def test_a_forced_scheme_is_used(tmp_path):
    path = write_conll(tmp_path / "x.conll", [[("Peter", "B-PER"), ("Blackburn", "I-PER")]])
    with pytest.raises(SlimtuneError, match=r"x.conll:4: the sentence ends inside a PER entity \(no E-PER\)"):
        read_conll(path, scheme="iobes")
    with pytest.raises(SlimtuneError, match=r"x.conll:3: B-PER after the sentence start: in IOB1"):
        read_conll(path, scheme="iob1")
    assert read_conll(path, scheme="iob2")[0].tags == ["B-PER", "I-PER"]
    iob1 = write_conll(tmp_path / "y.conll", [[("Peter", "B-PER"), ("Paul", "B-PER")]], scheme="iob1")
    assert read_conll(iob1, scheme="iob1")[0].tags == ["B-PER", "B-PER"]
    with pytest.raises(SlimtuneError, match=r"y.conll:3: I-PER after the sentence start: in IOB2"):
        read_conll(iob1, scheme="iob2")


def test_without_tags_the_first_column_is_the_word(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("EU\nrejects\n\nPeter\n")
    sentences = read_conll(path, with_tags=False)
    assert [s.words for s in sentences] == [["EU", "rejects"], ["Peter"]] and sentences[0].tags is None


@pytest.mark.parametrize("text,error", [
    ("EU\n\nrejects\n", r"a.conll:1: expected a token and a tag .* got only 'EU'"),
    ("EU NNP B-ORG\nrejects O\n", r"a.conll:2: 2 columns where line 1 has 3"),
    ("EU ORG\n", r"a.conll:1: tag 'ORG' is not O or B-/I-/E-/S-"),
    ("EU B-ORG\nrejects O\nBlair I-PER\n", r"a.conll:3: I-PER after O: in IOB2 .* because B-ORG at line 1 "
                                           r"opens an entity, which IOB1 does not allow"),
    ("EU B-ORG\nUnion I-PER\n", r"a.conll:2: I-PER after B-ORG: in IOB2 an entity starts with B-PER"),
    ("EU S-ORG\n\nPeter E-PER\n", r"a.conll:3: E-PER after the sentence start"),
    ("New B-LOC\n\nYork E-LOC\n", r"a.conll:1: the sentence ends inside a LOC entity"),
    ("-DOCSTART- O\n\n\n", r"a.conll: no sentences"),
])
def test_malformed_files_are_reported_with_file_and_line(tmp_path, text, error):
    path = tmp_path / "a.conll"
    path.write_text(text)
    with pytest.raises(SlimtuneError, match=error):
        read_conll(path)


def test_non_utf8_is_reported(tmp_path):
    path = tmp_path / "a.conll"
    path.write_bytes(b"caf\xe9 O\n")
    with pytest.raises(SlimtuneError, match="not UTF-8"):
        read_conll(path)


def test_predictions_are_appended_as_a_column(tmp_path):
    source = tmp_path / "a.conll"
    source.write_text(CONLL)
    out = tmp_path / "out.conll"
    write_with_predictions(source, out, {3: "B-ORG", 4: "O", 5: "O", 7: "B-PER", 8: "I-PER"})
    lines = out.read_text().splitlines()
    assert lines[0] == "-DOCSTART- -X- -X- O O" and lines[1] == ""
    assert lines[2] == "EU NNP B-NP B-ORG B-ORG" and lines[4] == "German JJ B-NP B-MISC O"
    assert lines[7] == "Blackburn NNP I-NP I-PER I-PER" and len(lines) == 8
