"""Splitting raw text into words the way CoNLL data is tokenised, keeping each word's character span."""

import re

# Abbreviations (U.S.), numbers with separators (1,000.5  1996-08-22), words with inner hyphens or
# apostrophes (Jean-Pierre, O'Neill), then any other single non-space character (punctuation).
_WORD = re.compile(r"(?:[^\W\d_]\.){2,}|\d+(?:[.,:/-]\d+)*|\w+(?:['’-]\w+)*|\S")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """[(word, start, end)] with text[start:end] == word.

    >>> [w for w, _, _ in split_words("Mr. O'Neill left the U.S. on 1996-08-22, at 10.30.")]
    ['Mr', '.', "O'Neill", 'left', 'the', 'U.S.', 'on', '1996-08-22', ',', 'at', '10.30', '.']
    """
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
