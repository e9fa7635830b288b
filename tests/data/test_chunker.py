"""The rule-based phrase chunker on SynthCaps- and Clotho-like captions, and token → phrase indices."""
import pytest
import torch

from hade.data.chunker import chunk, chunk_labeled, chunk_texts, token_phrase_index

CASES = [
    ("A loud dog barks twice, then rain falls softly.",
     [("A loud dog", "NP"), ("barks twice", "VP"), ("rain", "NP"), ("falls softly", "VP")]),
    ("Two high drum hits as someone knocks on a door.",
     [("Two high drum hits", "NP"), ("someone", "NP"), ("knocks", "VP"), ("a door", "NP")]),
    ("A door is knocked on slowly while a machine beeps three times.",
     [("A door", "NP"), ("is knocked on slowly", "VP"), ("a machine", "NP"), ("beeps three times", "VP")]),
    ("A siren goes off quickly at a high pitch, followed by two rising tones.",
     [("A siren", "NP"), ("goes off quickly", "VP"), ("a high pitch", "NP"), ("two rising tones", "NP")]),
    ("A high-pitched pure tone repeated three times can be heard.",
     [("A high-pitched pure tone", "NP"), ("repeated three times can be heard", "VP")]),
    ("Birds sing and people clap over a background of howling wind.",
     [("Birds", "NP"), ("sing", "VP"), ("people", "NP"), ("clap", "VP"), ("a background", "NP"),
      ("howling wind", "NP")]),
    ("A dog lets out a bark after it is raining.",
     [("A dog", "NP"), ("lets out", "VP"), ("a bark", "NP"), ("it", "NP"), ("is raining", "VP")]),
    ("The sound of a dog bark", [("The sound", "NP"), ("a dog bark", "NP")]),
    ("a person walks by", [("a person", "NP"), ("walks by", "VP")]),
    ("thunder", [("thunder", "NP")]),
]


@pytest.mark.parametrize("caption,expected", CASES)
def test_chunks_of_typical_captions(caption, expected):
    got = [(caption[s:e], kind) for s, e, kind in chunk_labeled(caption)]
    assert got == expected


def test_spans_are_ordered_disjoint_and_exclude_separators():
    caption = "Rapid wailing together with three beeps, followed by a slow knocking sound and two thumps of a drum."
    spans = chunk(caption)
    assert chunk_texts(caption) == ["Rapid wailing", "three beeps", "a slow knocking sound", "two thumps", "a drum"]
    assert all(s < e for s, e in spans)
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
    covered = " ".join(caption[s:e].lower() for s, e in spans).split()
    for separator in ("together", "with", "followed", "by", "and", "of"):
        assert separator not in covered


def test_number_plural_noun_versus_clause():
    assert chunk_texts("two dog barks") == ["two dog barks"]
    assert chunk_texts("a dog barks") == ["a dog", "barks"]


def test_only_separators_give_no_chunk():
    assert chunk("and then, while") == []
    assert chunk("") == []


def test_token_phrase_index_from_offsets():
    caption = "a loud dog barks, then rain"
    # word pieces: [CLS] a loud dog bark ##s , then rain [SEP] [PAD]
    offsets = torch.tensor([[(0, 0), (0, 1), (2, 6), (7, 10), (11, 15), (15, 16), (16, 17), (18, 22), (23, 27),
                             (0, 0), (0, 0)]])
    index = token_phrase_index([caption], offsets)
    assert index.tolist() == [[-1, 0, 0, 0, 1, 1, -1, -1, 2, -1, -1]]
    assert token_phrase_index(["and"], torch.tensor([[(0, 0), (0, 3), (0, 0)]])).tolist() == [[-1, -1, -1]]
