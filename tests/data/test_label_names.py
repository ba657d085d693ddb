"""--label-names: integer labels read as names, every value named."""

import pytest

from slimtune.data.label_names import apply_label_names, parse_label_names
from slimtune.data.table import LabelledText
from slimtune.errors import SlimtuneError


def rows(*labels):
    return [LabelledText(f"text {i}", label) for i, label in enumerate(labels)]


def test_a_list_names_values_in_numeric_order():
    named = apply_label_names(rows("1", "0", "10", "2"), "a,b,c,d,e,f,g,h,i,j,k", "f.tsv")
    assert [r.label for r in named] == ["b", "a", "k", "c"]


def test_pairs_name_each_value():
    assert [r.label for r in apply_label_names(rows("0", "1"), "1=positive, 0=negative", "f")] == ["negative", "positive"]


@pytest.mark.parametrize("spec, labels, message", [
    ("neg", ("0", "1"), "label '1' has no name"),
    ("a,a", ("0", "1"), "names must be distinct"),
    ("0=a,b", ("0",), "either all value=name pairs"),
    ("a,b", ("x", "y"), "names integer labels"),
    ("", ("0",), "give names separated by commas"),
    ("0=a,0=b", ("0",), "each value once"),
])
def test_bad_names_are_refused(spec, labels, message):
    with pytest.raises(SlimtuneError, match=message):
        apply_label_names(rows(*labels), spec, "f.tsv")


def test_parse_pairs():
    assert parse_label_names("0=negative,1=positive") == {"0": "negative", "1": "positive"}
