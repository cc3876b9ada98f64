"""Headline sentiment from a finance word list shipped with the project (no model, no download).

The list (``finance_words.txt`` next to this module, project-authored in the manner of the
Loughran-McDonald finance dictionaries) gives each word a polarity of +1 or -1. A text's score
is ``(positive - negative) / (positive + negative)`` over the sentiment words it contains, in
[-1, 1]; None when it contains none. A sentiment word preceded within three words by a negator
("not", "no", "never", "without", "n't"...) counts with the opposite polarity.

Tokens are lower-cased words; a hyphenated token is looked up whole ("sell-off") and otherwise
part by part ("better-than-expected" counts "better").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

__all__ = ["WORD_LIST", "Lexicon", "default_lexicon", "score"]

#: The packaged word list.
WORD_LIST = "finance_words.txt"
_TOKEN = re.compile(r"[a-z]+(?:['-][a-z]+)*")
_CURLY_APOSTROPHE = "\u2019"
_NEGATORS = frozenset(
    {"not", "no", "never", "without", "neither", "nor", "none", "nobody", "nothing",
     "hardly", "barely", "cannot"}
)
_NEGATION_WINDOW = 3


class Lexicon:
    """Word -> polarity (+1/-1) and the scorer over it."""

    __slots__ = ("polarity",)

    def __init__(self, polarity: Mapping[str, int]) -> None:
        bad = {w: p for w, p in polarity.items() if p not in (1, -1)}
        if bad:
            raise ValueError(f"polarity must be +1 or -1: {bad}")
        self.polarity = dict(polarity)

    def __len__(self) -> int:
        return len(self.polarity)

    @classmethod
    def parse(cls, text: str, origin: str = "<word list>") -> Lexicon:
        """Read the word-list format: ``+ word word ...`` / ``- word ...`` lines, ``#``
        comments. A word listed twice with different polarities is an error."""
        polarity: dict[str, int] = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            sign, _, words = line.partition(" ")
            if sign not in ("+", "-") or not words.strip():
                raise ValueError(f"{origin}:{lineno}: expected '+ words...' or '- words...'")
            value = 1 if sign == "+" else -1
            for word in words.split():
                word = word.lower()
                if not _TOKEN.fullmatch(word):
                    raise ValueError(f"{origin}:{lineno}: {word!r} is not a lower-case word")
                if polarity.get(word, value) != value:
                    raise ValueError(f"{origin}:{lineno}: {word!r} listed with both polarities")
                polarity[word] = value
        return cls(polarity)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Lexicon:
        """The word list at ``path``, or the packaged one."""
        if path is None:
            text = resources.files("connectors.news").joinpath(WORD_LIST).read_text("utf-8")
            return cls.parse(text, WORD_LIST)
        return cls.parse(Path(path).read_text("utf-8"), str(path))

    def counts(self, text: str) -> tuple[int, int]:
        """(positive, negative) sentiment-word counts of ``text``, negation applied."""
        pos = neg = 0
        since_negator = _NEGATION_WINDOW + 1
        for token in _TOKEN.findall(text.lower().replace(_CURLY_APOSTROPHE, "'")):
            if token in _NEGATORS or token.endswith("n't"):
                since_negator = 0
                continue
            since_negator += 1
            parts = [token] if token in self.polarity else token.split("-")
            for part in parts:
                value = self.polarity.get(part)
                if value is None:
                    continue
                if since_negator <= _NEGATION_WINDOW:
                    value = -value
                if value > 0:
                    pos += 1
                else:
                    neg += 1
        return pos, neg

    def score(self, text: str) -> float | None:
        """``(pos - neg) / (pos + neg)`` in [-1, 1]; None without sentiment words."""
        pos, neg = self.counts(text)
        if pos + neg == 0:
            return None
        return (pos - neg) / (pos + neg)


@functools.cache
def default_lexicon() -> Lexicon:
    """The packaged word list, loaded once."""
    return Lexicon.load()


def score(text: str) -> float | None:
    """Score ``text`` with the packaged word list."""
    return default_lexicon().score(text)
