import itertools

import pytest

from slimtune.data.tag_schemes import SCHEMES, Span, TagError, convert, detect_scheme, parse_tag, repair, to_spans

# The same entities in every scheme: adjacent same-type entities (IOB1's B-), a three-word entity
# next to another type, single-word entities, and entities at both sentence ends.
SAME_ENTITIES = [
    {
        "iob1": ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "O", "I-ORG"],
        "iob2": ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "O", "B-ORG"],
        "iobes": ["B-PER", "E-PER", "O", "S-LOC", "S-LOC", "O", "S-ORG"],
    },
    {
        "iob1": ["O", "I-PER", "I-PER", "I-PER", "I-LOC", "I-MISC", "I-MISC"],
        "iob2": ["O", "B-PER", "I-PER", "I-PER", "B-LOC", "B-MISC", "I-MISC"],
        "iobes": ["O", "B-PER", "I-PER", "E-PER", "S-LOC", "B-MISC", "E-MISC"],
    },
    {"iob1": ["O", "O"], "iob2": ["O", "O"], "iobes": ["O", "O"]},
]


@pytest.mark.parametrize("source,target", list(itertools.product(SCHEMES, SCHEMES)))
@pytest.mark.parametrize("case", range(len(SAME_ENTITIES)))
def test_conversion_in_every_direction(case, source, target):
    tags = SAME_ENTITIES[case]
    assert convert(tags[source], source, target) == tags[target]


def test_spans_are_read_the_same_in_every_scheme():
    expected = [Span("PER", 0, 2), Span("LOC", 3, 4), Span("LOC", 4, 5), Span("ORG", 6, 7)]
    for scheme in SCHEMES:
        assert to_spans(SAME_ENTITIES[0][scheme], scheme) == expected


@pytest.mark.parametrize("scheme", SCHEMES)
def test_detection(scheme):
    sequences = [case[scheme] for case in SAME_ENTITIES]
    assert detect_scheme(sequences)[0] == scheme
    assert detect_scheme([["O", "O"]]) == ("iob2", None)
    assert detect_scheme([["O"], ["I-PER", "B-PER", "O", "I-LOC"]]) == ("iob1", None)
    assert detect_scheme([["O"], ["I-PER", "O", "B-LOC"]]) == ("iob2", (1, 2))  # neither: IOB2, and why


@pytest.mark.parametrize("tags,scheme,index,message", [
    (["B-ORG", "I-PER"], "iob2", 1, "I-PER after B-ORG"),
    (["O", "I-PER"], "iob2", 1, "I-PER after O"),
    (["I-PER", "O"], "iob2", 0, "I-PER after the sentence start"),
    (["S-PER"], "iob2", 0, "S-PER is not a IOB2 tag"),
    (["O", "B-PER"], "iob1", 1, "B- only separates two adjacent PER"),
    (["I-LOC", "B-PER"], "iob1", 1, "B-PER after I-LOC"),
    (["O", "E-PER"], "iobes", 1, "E-PER after O"),
    (["B-ORG", "E-PER"], "iobes", 1, "E-PER after B-ORG"),
    (["B-PER", "O"], "iobes", 1, "not closed with E-PER"),
    (["B-PER", "S-PER"], "iobes", 1, "not closed with E-PER"),
    (["O", "I-PER", "E-PER"], "iobes", 1, "I-PER after O"),
    (["O", "B-PER", "I-PER"], "iobes", 2, "ends inside a PER entity"),
])
def test_impossible_sequences_name_the_tag(tags, scheme, index, message):
    with pytest.raises(TagError, match=message) as raised:
        to_spans(tags, scheme)
    assert raised.value.index == index


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B-", "b-PER", "", "B_PER"])
def test_malformed_tags(tag):
    with pytest.raises(TagError, match="is not O or B-/I-/E-/S-"):
        parse_tag(tag)


def test_repair_reads_model_output_like_conlleval():
    assert repair(["O", "I-PER", "I-PER", "B-LOC", "I-ORG", "I-ORG", "B-ORG"]) == [
        "O", "B-PER", "I-PER", "B-LOC", "B-ORG", "I-ORG", "B-ORG"]
