"""Numbers as people say and write them: digits, spoken words, units, comparators.

``find_quantities("increase your lasix to eighty milligrams once a day")`` finds 80 mg;
``"one twenty over eighty"`` and ``"120/80"`` are both a blood pressure of 120/80. The same
parser reads the transcript and the note, so "twenty milligrams" in one and "20 mg" in the
other compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .text import Token, tokenize

ONES = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}  # fmt: skip
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
NUMBER_WORDS = frozenset(ONES) | frozenset(TENS) | frozenset(SCALES) | {"half", "dozen"}

# unit surface (token sequence, lowercase) → (normalised unit, dimension)
_UNIT_TABLE: list[tuple[str, str, str]] = [
    # mass / dose
    ("milligrams per deciliter", "mg/dL", "conc"),
    ("milligram per deciliter", "mg/dL", "conc"),
    ("mg / dl", "mg/dL", "conc"),
    ("mg/dl", "mg/dL", "conc"),
    ("millimoles per liter", "mmol/L", "conc"),
    ("mmol / l", "mmol/L", "conc"),
    ("mmol", "mmol/L", "conc"),
    ("milligrams", "mg", "mass"), ("milligram", "mg", "mass"), ("mgs", "mg", "mass"),
    ("mg", "mg", "mass"), ("milli", "mg", "mass"),
    ("micrograms", "mcg", "mass"), ("microgram", "mcg", "mass"), ("mcg", "mcg", "mass"),
    ("ug", "mcg", "mass"), ("µg", "mcg", "mass"),
    ("grams", "g", "mass"), ("gram", "g", "mass"), ("g", "g", "mass"), ("gm", "g", "mass"),
    ("kilograms", "kg", "weight"), ("kilogram", "kg", "weight"), ("kilos", "kg", "weight"),
    ("kilo", "kg", "weight"), ("kg", "kg", "weight"), ("kgs", "kg", "weight"),
    ("pounds", "lb", "weight"), ("pound", "lb", "weight"), ("lbs", "lb", "weight"),
    ("lb", "lb", "weight"),
    ("milliliters", "mL", "volume"), ("milliliter", "mL", "volume"), ("millilitres", "mL", "volume"),
    ("ml", "mL", "volume"), ("cc", "mL", "volume"), ("ccs", "mL", "volume"),
    ("liters", "L", "volume"), ("liter", "L", "volume"), ("litres", "L", "volume"),
    ("units", "units", "units"), ("unit", "units", "units"), ("iu", "units", "units"),
    ("milliequivalents", "mEq", "units"), ("meq", "mEq", "units"),
    ("tablets", "tablet", "count"), ("tablet", "tablet", "count"), ("tabs", "tablet", "count"),
    ("pills", "tablet", "count"), ("pill", "tablet", "count"), ("capsules", "tablet", "count"),
    ("capsule", "tablet", "count"), ("puffs", "puff", "count"), ("puff", "puff", "count"),
    ("drops", "drop", "count"), ("sprays", "spray", "count"), ("patches", "patch", "count"),
    ("servings", "serving", "count"), ("drinks", "drink", "count"), ("packs", "pack", "count"),
    ("cigarettes", "cigarette", "count"), ("beers", "drink", "count"), ("glasses", "drink", "count"),
    ("times", "times", "count"),
    # vitals
    ("millimeters of mercury", "mmHg", "pressure"), ("mmhg", "mmHg", "pressure"),
    ("mm hg", "mmHg", "pressure"),
    ("beats per minute", "/min", "rate"), ("beats a minute", "/min", "rate"),
    ("breaths per minute", "/min", "rate"), ("breaths a minute", "/min", "rate"),
    ("bpm", "/min", "rate"),
    ("degrees fahrenheit", "deg", "temp"), ("degrees celsius", "deg", "temp"),
    ("degrees", "deg", "temp"), ("degree", "deg", "temp"), ("°", "deg", "temp"),
    ("percent", "%", "percent"), ("per cent", "%", "percent"), ("%", "%", "percent"),
    # length
    ("centimeters", "cm", "length"), ("centimeter", "cm", "length"), ("cm", "cm", "length"),
    ("centimetres", "cm", "length"),
    ("millimeters", "mm", "length"), ("millimeter", "mm", "length"), ("mm", "mm", "length"),
    ("inches", "in", "length"), ("inch", "in", "length"), ("feet", "ft", "length"),
    ("foot", "ft", "length"), ("meters", "m", "length"), ("miles", "mi", "length"),
    ("mile", "mi", "length"), ("blocks", "block", "length"), ("flights", "flight", "count"),
    # time
    ("seconds", "second", "time"), ("second", "second", "time"),
    ("minutes", "minute", "time"), ("minute", "minute", "time"), ("mins", "minute", "time"),
    ("hours", "hour", "time"), ("hour", "hour", "time"), ("hrs", "hour", "time"),
    ("days", "day", "time"), ("day", "day", "time"),
    ("weeks", "week", "time"), ("week", "week", "time"), ("wks", "week", "time"),
    ("months", "month", "time"), ("month", "month", "time"),
    ("years", "year", "time"), ("year", "year", "time"), ("yrs", "year", "time"),
    # clock times
    ("o'clock", "o'clock", "clock"), ("am", "o'clock", "clock"), ("pm", "o'clock", "clock"),
    ("a.m.", "o'clock", "clock"), ("p.m.", "o'clock", "clock"),
    ("in the morning", "o'clock", "clock"), ("in the evening", "o'clock", "clock"),
    ("in the afternoon", "o'clock", "clock"), ("at night", "o'clock", "clock"),
]  # fmt: skip
UNITS: dict[tuple[str, ...], tuple[str, str]] = {}
for _surface, _unit, _dim in _UNIT_TABLE:
    _key = tuple(t.norm for t in tokenize(_surface))
    UNITS.setdefault(_key, (_unit, _dim))
_MAX_UNIT_LEN = max(len(k) for k in UNITS)
UNIT_DIMENSION = {u: d for _s, u, d in _UNIT_TABLE}
_COUNTED = {u: ("patches" if u == "patch" else f"{u}s")
            for _s, u, d in _UNIT_TABLE if d in ("count", "time") and u.isalpha() and not u.endswith("s")}
"""Units that are nouns counted in the plural ("day" → "days"; not "mg", "cm", "times")."""
DOSE_DIMENSIONS = frozenset({"mass", "volume", "units", "conc"})

_COMPARATORS: list[tuple[tuple[str, ...], str]] = [
    (("less", "than"), "<"), (("fewer", "than"), "<"), (("lower", "than"), "<"),
    (("under",), "<"), (("below",), "<"), (("<",), "<"), (("≤",), "<="),
    (("more", "than"), ">"), (("greater", "than"), ">"), (("higher", "than"), ">"),
    (("over",), ">"), (("above",), ">"), ((">",), ">"), (("≥",), ">="),
    (("at", "least"), ">="), (("at", "most"), "<="), (("up", "to"), "<="),
    (("no", "more", "than"), "<="),
    (("about",), "~"), (("around",), "~"), (("approximately",), "~"), (("roughly",), "~"),
    (("almost",), "~"), (("nearly",), "~"), (("approx",), "~"), (("~",), "~"),
]  # fmt: skip

# words right before a number that make "one twenty" mean 120 (a reading, not two numbers)
_READING_CUES = frozenset(
    """pressure bp rate pulse hr weight weigh weighs weighed sugar sugars glucose cholesterol
    temperature temp ldl hdl triglycerides platelets was is of at""".split()
)


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number as said or written, with what was attached to it.

    ``value2`` holds the second number of a ratio (``120/80``, ``3 out of 6``) or the upper end
    of a range (``2 to 3 days``); ``sep`` says which (``/`` or ``-``).
    """

    value: float
    unit: str | None = None
    value2: float | None = None
    sep: str | None = None
    comparator: str | None = None
    text: str = ""
    start: int = 0
    end: int = 0
    spoken: bool = False
    """True when any part of the number was said in words."""

    @property
    def dimension(self) -> str | None:
        return UNIT_DIMENSION.get(self.unit) if self.unit else None

    @property
    def values(self) -> tuple[float, ...]:
        return (self.value,) if self.value2 is None else (self.value, self.value2)

    def normalized(self) -> str:
        v = fmt_number(self.value)
        if self.value2 is not None:
            v += (self.sep if self.sep in ("/", ":") else "-") + (
                f"{int(self.value2):02d}" if self.sep == ":" else fmt_number(self.value2)
            )
        cmp = {"~": "about ", "<": "< ", ">": "> ", "<=": "≤ ", ">=": "≥ "}.get(self.comparator or "", "")
        unit = f" {self.unit}" if self.unit and self.unit != "%" else (self.unit or "")
        return f"{cmp}{v}{unit}"

    def readable(self) -> str:
        """As a note says it: ``normalized`` with a counted unit in the plural ("3 days",
        "6-7 times", "2 tablets"; "1 day"). The model copies the facts it is shown into its
        sentences, and "for the last 3 day" was ``normalized``'s "3 day" copied."""
        text = self.normalized()
        if self.unit in _COUNTED and (self.value != 1 or (self.value2 is not None and self.sep != "/")):
            text = text[: len(text) - len(self.unit)] + _COUNTED[self.unit]
        return text


def fmt_number(x: float) -> str:
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.3f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------- parsing


def _parse_digits(tok: str) -> tuple[float, float | None, bool]:
    """``"120/80"`` → (120, 80, False); ``"1+"`` → (1, None, True); ``"1,000"`` → 1000."""
    if ":" in tok:
        h, m = tok.split(":", 1)
        return float(h), float(m), False
    plus = tok.endswith("+")
    tok = tok.rstrip("+")
    if "/" in tok:
        a, b = tok.split("/", 1)
        return float(a.replace(",", "")), float(b.replace(",", "")), plus
    return float(tok.replace(",", "")), None, plus


def _parse_words(words: list[str]) -> float | None:
    """Parse a run of number words (already split into tokens). None if not a number."""
    if not words:
        return None
    if "point" in words:
        i = words.index("point")
        whole = _parse_words(words[:i]) if i else 0.0
        digits = [ONES.get(w) for w in words[i + 1 :]]
        if whole is None or not digits or any(d is None or d > 9 for d in digits):
            return None
        return float(f"{int(whole)}." + "".join(str(d) for d in digits))
    total = 0.0
    current = 0.0
    seen = False
    for w in words:
        if w in ("and", "a"):
            continue
        if w in ONES:
            current += ONES[w]
        elif w in TENS:
            current += TENS[w]
        elif w == "hundred":
            current = (current or 1) * 100
        elif w in ("thousand", "million"):
            total += (current or 1) * SCALES[w]
            current = 0
        elif w == "half":
            current += 0.5
        elif w == "dozen":
            current = (current or 1) * 12
        else:
            return None
        seen = True
    return total + current if seen else None


def _number_run(tokens: list[Token], i: int, reading: bool) -> tuple[float, int, bool] | None:
    """Parse a spoken number starting at ``tokens[i]``: (value, tokens consumed, colloquial).

    Handles "one hundred and twenty", "ninety eight point six", "a hundred", "one and a half",
    "two and a half", and — when ``reading`` — "one twenty" = 120, "one oh five" = 105.
    """
    n = len(tokens)
    j = i
    words: list[str] = []
    if tokens[j].norm == "a" and j + 1 < n and tokens[j + 1].norm in ("hundred", "thousand", "half", "dozen"):
        words.append("a")
        j += 1
    while j < n:
        w = tokens[j].norm
        if w in NUMBER_WORDS:
            # "twenty" "five" ok; "five" "twenty" only as a reading
            if words and w in ONES and words[-1] in ONES and words[-1] != "a":
                break
            if words and w in TENS and words[-1] in ONES and ONES[words[-1]] >= 1:
                break
            if words and w in TENS and words[-1] in TENS:
                break
            words.append(w)
            j += 1
        elif (
            w == "and"
            and words
            and j + 1 < n
            and (
                tokens[j + 1].norm in ONES
                or tokens[j + 1].norm in TENS
                or (tokens[j + 1].norm == "a" and j + 2 < n and tokens[j + 2].norm == "half")
            )
            and words[-1] in {"hundred", "thousand"} | set(ONES) | set(TENS)
        ):
            if tokens[j + 1].norm == "a":
                words.extend(["and", "a", "half"])
                j += 3
                break
            words.append("and")
            j += 1
        elif w == "point" and words and j + 1 < n and tokens[j + 1].norm in ONES:
            words.append("point")
            j += 1
            while j < n and tokens[j].norm in ONES and ONES[tokens[j].norm] <= 9:
                words.append(tokens[j].norm)
                j += 1
            break
        else:
            break
    if not words or words == ["a"]:
        return None
    if words[-1] == "and":
        words.pop()
        j -= 1
    if "point" not in words and _spoken_decimal(tokens, i, j):
        # "ninety eight . six": the decimal point a transcriber wrote as a full stop
        words += ["point", tokens[j + 1].norm]
        j += 2
    value = _parse_words(words)
    if value is None:
        return None
    colloquial = False
    # "one twenty" / "one oh five" / "one thirty five" as a reading
    if reading and len(words) == 1 and words[0] in ONES and 1 <= ONES[words[0]] <= 2 and j < n:
        k = j
        nxt = tokens[k].norm
        if nxt in TENS or (nxt in ONES and 10 <= ONES[nxt] <= 19):
            low = TENS.get(nxt) or ONES[nxt]
            k += 1
            if nxt in TENS and k < n and tokens[k].norm in ONES and 1 <= ONES[tokens[k].norm] <= 9:
                low += ONES[tokens[k].norm]
                k += 1
            return value * 100 + low, k - i, True
        if nxt == "oh" and k + 1 < n and tokens[k + 1].norm in ONES and ONES[tokens[k + 1].norm] <= 9:
            return value * 100 + ONES[tokens[k + 1].norm], k + 2 - i, True
    return value, j - i, colloquial


def _spoken_decimal(tokens: list[Token], i: int, j: int) -> bool:
    """Whether ``tokens[j:]`` is " . <digit>" continuing the number ``tokens[i:j]`` as its decimals:
    transcripts written from speech put the "point" of "ninety seven point two" (a temperature),
    "two point five" (a dose), "seven point three" (an A1c) down as a full stop, spaced from
    the words on both sides ("ninety seven . two your respiratory rate is …", ACI-Bench). A
    stop written against its word ("… was seven. Two weeks later …", as Whisper writes) ends a
    sentence; and a digit that starts a number or a score of its own ("a nine . nine out of
    10"), or one after a list number ("number one . two , …" in a dictation), is not a decimal."""
    n = len(tokens)
    if i > 0 and tokens[i - 1].norm in ("number", "no", "#"):
        return False
    if not (0 < j and j + 1 < n and tokens[j].norm == "." and tokens[j - 1].end < tokens[j].start
            and tokens[j].end < tokens[j + 1].start):
        return False
    digit = tokens[j + 1].norm
    if digit not in ONES or ONES[digit] > 9:
        return False
    after = tokens[j + 2].norm if j + 2 < n else ""
    return after not in NUMBER_WORDS and after not in ("out", "/", "point", "oh")


def _match_unit(tokens: list[Token], i: int) -> tuple[str, int] | None:
    for length in range(min(_MAX_UNIT_LEN, len(tokens) - i), 0, -1):
        key = tuple(t.norm for t in tokens[i : i + length])
        if key in UNITS:
            return UNITS[key][0], length
    return None


def _is_number_start(tokens: list[Token], i: int) -> bool:
    t = tokens[i]
    if t.kind == "num":
        return True
    if t.norm in NUMBER_WORDS and t.norm not in ("hundred", "thousand", "million", "dozen"):
        return t.norm != "half" or (i > 0 and tokens[i - 1].norm in ("a", "and"))
    return t.norm == "a" and i + 1 < len(tokens) and tokens[i + 1].norm in ("hundred", "thousand")


_CLOCK_LEAD = frozenset("at around by until till before after since".split())


def _read_number(tokens: list[Token], i: int) -> tuple[float, float | None, int, bool] | None:
    """(value, value2-from-digits, tokens consumed, spoken) at tokens[i]."""
    t = tokens[i]
    if t.kind == "num":
        v, v2, _plus = _parse_digits(t.norm)
        j = i + 1
        # "2.5" is one token; "2 and a half"
        if (
            v2 is None
            and j + 2 < len(tokens)
            and tokens[j].norm == "and"
            and tokens[j + 1].norm == "a"
            and tokens[j + 2].norm == "half"
        ):
            return v + 0.5, None, j + 3 - i, True
        return v, v2, j - i, False
    reading = i > 0 and tokens[i - 1].norm in _READING_CUES
    if not reading:
        # "one twenty over eighty": a reading when "over" follows
        k = i
        while k < len(tokens) and k < i + 4 and tokens[k].norm in NUMBER_WORDS | {"oh"}:
            k += 1
        reading = k < len(tokens) and tokens[k].norm == "over"
    run = _number_run(tokens, i, reading)
    if run is None:
        return None
    value, used, _coll = run
    # "at eight thirty", "around seven fifteen": a clock time, hours then minutes
    if (
        i > 0
        and tokens[i - 1].norm in _CLOCK_LEAD
        and used == 1
        and 1 <= value <= 12
        and i + 1 < len(tokens)
        and (tokens[i + 1].norm in TENS or tokens[i + 1].norm in ("fifteen", "oh"))
    ):
        minutes = _number_run(tokens, i + 1, False)
        if minutes is not None and minutes[0] < 60:
            return value, minutes[0], 1 + minutes[1], True
    return value, None, used, True


def find_quantities(text: str, tokens: list[Token] | None = None) -> list[Quantity]:
    """Every number in ``text`` with its unit, comparator, ratio or range, in order.

    Bare "one"/"a" without a unit are not numbers ("one of them", "no one"). Ordinals and
    list markers are ignored.
    """
    if tokens is None:
        return list(_quantities_cached(text))
    return _find_quantities(text, tokens)


@lru_cache(maxsize=4096)
def _quantities_cached(text: str) -> tuple[Quantity, ...]:
    return tuple(_find_quantities(text, tokenize(text)))


def _find_quantities(text: str, toks: list[Token]) -> list[Quantity]:
    out: list[Quantity] = []
    i = 0
    n = len(toks)
    while i < n:
        if not _is_number_start(toks, i):
            i += 1
            continue
        read = _read_number(toks, i)
        if read is None:
            i += 1
            continue
        value, value2, used, spoken = read
        start_tok, j = i, i + used
        sep = None
        if value2 is not None:
            sep = (
                ":"
                if (":" in toks[i].norm or (spoken and used > 1 and toks[i - 1].norm in _CLOCK_LEAD))
                else "/"
            )
        # "120 over 80", "three out of six", "2 to 3", "2-3" (tokenised as "2", "3")
        if value2 is None and j < n:
            # "a hundred and forty over over seventy": a word said twice is said once
            over = j + 1 + int(j + 2 < n and toks[j + 1].norm == "over")
            if toks[j].norm == "over" and over < n and _is_number_start(toks, over):
                r2 = _read_number(toks, over)
                if r2 is not None:
                    value2, sep = r2[0], "/"
                    spoken = spoken or r2[3]
                    j = over + r2[2]
            elif (
                toks[j].norm == "out"
                and j + 2 < n
                and toks[j + 1].norm == "of"
                and _is_number_start(toks, j + 2)
            ):
                r2 = _read_number(toks, j + 2)
                if r2 is not None:
                    value2, sep = r2[0], "/"
                    spoken = spoken or r2[3]
                    j = j + 2 + r2[2]
            elif toks[j].norm in ("to", "or") and j + 1 < n and _is_number_start(toks, j + 1):
                r2 = _read_number(toks, j + 1)
                # a range only if the next number has no competing meaning ("to 80 mg" after
                # "from 20 mg" is handled by the caller: only unit-less first numbers range)
                if r2 is not None and r2[1] is None:
                    k = j + 1 + r2[2]
                    if _match_unit(toks, k) is not None or k >= n or toks[k].kind == "sym":
                        if r2[0] > value:
                            value2, sep = r2[0], "-"
                            spoken = spoken or r2[3]
                            j = k
        unit = None
        if j < n:
            u = _match_unit(toks, j)
            if u is not None:
                unit, ulen = u
                j += ulen
        # bare spoken "one" / "a" / "half" without a unit is usually not a quantity
        surface_words = [t.norm for t in toks[start_tok : start_tok + used]]
        if (unit is None and value2 is None and spoken and used == 1 and j < n
                and toks[j].norm == surface_words[0] and j + 1 < n and toks[j + 1].norm in NUMBER_WORDS):
            # "ninety ninety seven": a number begun again is said once, as it was finished
            i = j
            continue
        if (
            unit is None
            and value2 is None
            and spoken
            and surface_words in (["one"], ["a"], ["half"], ["oh"], ["zero"])
        ):
            i = start_tok + used
            continue
        # list markers / ordinal-ish "1." at the very start
        if (
            not spoken
            and unit is None
            and value2 is None
            and start_tok == 0
            and j < n
            and toks[j].norm in (".", ")")
            and n > 2
        ):
            i = j + 1
            continue
        # year-old ages: keep as years
        comparator = None
        k = start_tok
        for words, sym in _COMPARATORS:
            L = len(words)
            if k - L >= 0 and tuple(t.norm for t in toks[k - L : k]) == words:
                comparator = sym
                break
        # "%" attached to digits: "45%" tokenises as "45" "%" — handled by unit table
        q = Quantity(
            value=value,
            unit=unit,
            value2=value2,
            sep=sep,
            comparator=comparator,
            text=text[toks[start_tok].start : toks[j - 1].end],
            start=toks[start_tok].start,
            end=toks[j - 1].end,
            spoken=spoken,
        )
        out.append(q)
        i = j
    return out


# --------------------------------------------------------------- frequency

_FREQ_PATTERNS: list[tuple[str, str]] = [
    (r"\b(?:once|one time|1 time)\s+(?:a|per|each)\s+day\b|\bonce daily\b|\bevery day\b|\bdaily\b|\bq\.?d\.?\b|\b(?:a|per)\s+day\b|\beach day\b|\bevery morning\b|\bin the morning\b", "daily"),
    (r"\b(?:twice|two times|2 times)\s+(?:(?:a|per|each)\s+day|daily)\b|\btwice daily\b|\bb\.?i\.?d\.?\b", "twice daily"),
    (r"\b(?:three times|3 times)\s+(?:(?:a|per|each)\s+day|daily)\b|\bt\.?i\.?d\.?\b", "three times daily"),
    (r"\b(?:four times|4 times)\s+(?:(?:a|per|each)\s+day|daily)\b|\bq\.?i\.?d\.?\b", "four times daily"),
    (r"\bevery (?:twelve|12) hours\b", "every 12 hours"),
    (r"\bevery (?:eight|8) hours\b", "every 8 hours"),
    (r"\bevery (?:six|6) hours\b", "every 6 hours"),
    (r"\bevery (?:four|4) hours\b", "every 4 hours"),
    (r"\b(?:at night|at bedtime|before bed|nightly|every night|q\.?h\.?s\.?)\b", "at bedtime"),
    (r"\b(?:as needed|when needed|if needed|prn|p\.r\.n\.)\b", "as needed"),
    (r"\b(?:once a week|once weekly|weekly|every week|one time a week)\b", "weekly"),
    (r"\b(?:twice a week|two times a week)\b", "twice weekly"),
    (r"\b(?:once a month|monthly|every month)\b", "monthly"),
]  # fmt: skip
_FREQ_RE = [(re.compile(p, re.IGNORECASE), norm) for p, norm in _FREQ_PATTERNS]
"""An interval ("every 6 hours", q6h) is kept as said, not made "four times daily" (QID): they
are different orders, and a line written from the fact said "four times daily" for "every six
hours", which the guard then flagged (ACI dev D2N077)."""


def find_frequency(text: str) -> tuple[str, int, int] | None:
    """The first dosing frequency in ``text``: (normalised, start, end)."""
    best: tuple[str, int, int] | None = None
    for rx, norm in _FREQ_RE:
        m = rx.search(text)
        if m and (best is None or m.start() < best[1] or (m.start() == best[1] and m.end() > best[2])):
            best = (norm, m.start(), m.end())
    return best


def supports(evidence: Quantity, claim: Quantity) -> bool:
    """Does ``evidence`` state the number(s) that ``claim`` states?

    Values must match (a ratio or range needs both ends); units must agree where both give
    one ("20 mg" is supported by "twenty milligrams" and by "lisinopril 20", not by "20 mcg").
    """
    if claim.value2 is not None:
        if evidence.values != claim.values:
            return False
    elif claim.value not in evidence.values:
        return False
    if claim.unit and evidence.unit and claim.unit != evidence.unit:
        return False
    return True
