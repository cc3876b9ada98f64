"""Which currencies a headline concerns: ISO codes, pairs, currency names, countries and
central banks found in the text.

Matching is rule-based and ordered: longer, more specific phrases are tried first and the text
they matched is consumed, so "Bank of Japan" counts once (JPY), "Australian dollar" is AUD and
never also USD, and "Hong Kong dollar" is nobody's major. Acronyms and proper names (``Fed``,
``ECB``, ``BoJ``, ``US``, ``UK``) match case-sensitively so "fed up" or "us" do not count;
currency words ("yen", "sterling", "euro", "dollar", "loonie") match in any case.

People are not matched (governors change), except the long-serving Fed, ECB and BoJ chairs.
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = ["CODES", "MAJORS", "currencies_in"]

#: The currencies the news collector files headlines under by default.
MAJORS: tuple[str, ...] = ("AUD", "CAD", "CHF", "EUR", "GBP", "JPY", "NZD", "USD")
#: Every code this module can return.
CODES: tuple[str, ...] = (*MAJORS, "CNY")

_CODE_ALT = "|".join(CODES) + "|CNH"
_I = re.IGNORECASE

# (pattern, currency or None to consume without a currency, flags), most specific first.
_RULES: list[tuple[str, str | None, int]] = [
    # Pairs and codes: EUR/USD, EURUSD, EUR-USD, USD.
    (rf"\b({_CODE_ALT})\s?[/-]?\s?({_CODE_ALT})\b", "PAIR", 0),
    (rf"\b({_CODE_ALT})\b", "CODE", 0),
    # Central banks (before the countries they contain).
    (r"\bfederal\s+reserve\b", "USD", _I),
    (r"\b(Fed|FED|FOMC|Powell)\b", "USD", 0),
    (r"\beuropean\s+central\s+bank\b", "EUR", _I),
    (r"\b(ECB|Lagarde|Bundesbank)\b", "EUR", 0),
    (r"\bbank\s+of\s+england\b", "GBP", _I),
    (r"\b(BoE|BOE)\b", "GBP", 0),
    (r"\bbank\s+of\s+japan\b", "JPY", _I),
    (r"\b(BoJ|BOJ|Ueda|JGBs?)\b", "JPY", 0),
    (r"\bswiss\s+national\s+bank\b", "CHF", _I),
    (r"\bSNB\b", "CHF", 0),
    (r"\bbank\s+of\s+canada\b", "CAD", _I),
    (r"\b(BoC|BOC)\b", "CAD", 0),
    (r"\breserve\s+bank\s+of\s+australia\b", "AUD", _I),
    (r"\bRBA\b", "AUD", 0),
    (r"\breserve\s+bank\s+of\s+new\s+zealand\b", "NZD", _I),
    (r"\bRBNZ\b", "NZD", 0),
    (r"\bpeople'?s\s+bank\s+of\s+china\b", "CNY", _I),
    (r"\b(PBOC|PBoC)\b", "CNY", 0),
    # Qualified dollars and francs (before the bare words).
    (r"\b(australian|aussie)\s+dollars?\b", "AUD", _I),
    (r"\b(new\s+zealand|kiwi)\s+dollars?\b", "NZD", _I),
    (r"\bcanadian\s+dollars?\b", "CAD", _I),
    (r"\b(u\.s\.|us|american)\s+dollars?\b", "USD", _I),
    (r"\b(hong\s+kong|singapore|taiwan(ese)?)\s+dollars?\b", None, _I),
    (r"\bswiss\s+francs?\b", "CHF", _I),
    (r"\bpound\s+sterling\b|\bbritish\s+pounds?\b", "GBP", _I),
    # Currency words.
    (r"\b(greenback|dollars?)\b", "USD", _I),
    (r"\b(euros?|euro[\s-]?zone|euro\s+area)\b", "EUR", _I),
    (r"\b(sterling|pound)\b", "GBP", _I),
    (r"\byen\b", "JPY", _I),
    (r"\bfrancs?\b", "CHF", _I),
    (r"\bloonie\b", "CAD", _I),
    (r"\baussie\b", "AUD", _I),
    (r"\bkiwi\b", "NZD", _I),
    (r"\b(yuan|renminbi)\b", "CNY", _I),
    # Countries and their adjectives.
    (r"\bunited\s+states\b", "USD", _I),
    (r"(?<![\w.])U\.S\.(A\.)?(?!\w)|\b(US|USA)\b", "USD", 0),
    (r"\bunited\s+kingdom\b", "GBP", _I),
    (r"(?<![\w.])U\.K\.(?!\w)|\bUK\b|\b(Britain|British)\b", "GBP", 0),
    (r"\b(Japan|Japanese)\b", "JPY", 0),
    (r"\b(Switzerland|Swiss)\b", "CHF", 0),
    (r"\b(Canada|Canadian)\b", "CAD", 0),
    (r"\b(Australia|Australian)\b", "AUD", 0),
    (r"\bNew\s+Zealand\b", "NZD", 0),
    (r"\b(China|Chinese)\b", "CNY", 0),
    (r"\b(Germany|German|France|French|Italy|Italian|Spain|Spanish)\b", "EUR", 0),
]

_COMPILED = [(re.compile(p, flags), cur) for p, cur, flags in _RULES]


def _code(token: str) -> str:
    token = token.upper()
    return "CNY" if token == "CNH" else token


def currencies_in(text: str, allowed: Collection[str] | None = None) -> list[str]:
    """Sorted currency codes ``text`` concerns (restricted to ``allowed`` when given)."""
    found: set[str] = set()
    work = text
    for pattern, cur in _COMPILED:

        def consume(m: re.Match[str], cur: str | None = cur) -> str:
            if cur == "PAIR":
                found.update((_code(m[1]), _code(m[2])))
            elif cur == "CODE":
                found.add(_code(m[1]))
            elif cur is not None:
                found.add(cur)
            return " " * len(m[0])

        work = pattern.sub(consume, work)
    if allowed is not None:
        found &= set(allowed)
    return sorted(found)
