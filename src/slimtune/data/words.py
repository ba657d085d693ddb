"""Splitting raw text into words the way CoNLL data is tokenised, keeping each word's character span."""

import re

# Abbreviations (U.S.), numbers with separators (1,000.5  1996-08-22), words with inner hyphens or
# apostrophes (Jean-Pierre, O'Neill), then any other single non-space character (punctuation).
_WORD = re.compile(r"(?:[^\W\d_]\.){2,}|\d+(?:[.,:/-]\d+)*|\w+(?:['’-]\w+)*|\S")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """[(word, start, end)] with text[start:end] == word.

    >>> split_words("Mr. O'Neill visited the U.S. in 1996-08.")
    [('Mr', 0, 2), ('.', 2, 3), ("O'Neill", 4, 11), ('visited', 12, 19), ('the', 20, 23), ('U.S.', 24, 28), ('in', 29, 31), ('1996-08', 32, 39), ('.', 39, 40)]
    """
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
