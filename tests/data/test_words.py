from slimtune.data.words import split_words


def test_words_keep_their_character_spans():
    text = "Mr. O'Neill left the U.S. on 1996-08-22, at 10.30."
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Mr", ".", "O'Neill", "left", "the", "U.S.", "on", "1996-08-22", ",", "at",
                                        "10.30", "."]
    assert all(text[start:end] == word for word, start, end in words)


def test_punctuation_is_split_off_and_whitespace_gives_nothing():
    assert [w for w, _, _ in split_words("(EU) rejects German-made lamb!")] == [
        "(", "EU", ")", "rejects", "German-made", "lamb", "!"]
    assert split_words("  \t ") == []
