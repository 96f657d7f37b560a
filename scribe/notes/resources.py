"""Where the plain-text resources live, and the lexicons read from them.

Templates and lexicons are files a clinician can open (``prompts/``), not Python data. They
are found, in order, at:

1. ``$SCRIBE_PROMPTS_DIR`` if set;
2. the repository's ``prompts/`` next to the ``scribe`` package (a source checkout or an
   editable install);
3. ``scribe/prompts`` inside the installed package, then ``<sys.prefix>/share/scribe/prompts``
   (where a wheel can place data files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..resources import prompts_dir as prompts_dir  # re-exported: the one lookup, in scribe.resources
from .text import Token, stem, tokenize

# ---------------------------------------------------------------- lexicons


def _lines(path: Path) -> list[tuple[int, str]]:
    out = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((n, line))
    return out


@dataclass(frozen=True, slots=True)
class Match:
    """A lexicon entry found in a token list: tokens[start:end] say ``canonical``."""

    canonical: str
    start: int
    end: int
    char_start: int
    char_end: int


class PhraseLexicon:
    """Longest-match lookup of multi-word phrases on token lists."""

    def __init__(self, entries: dict[tuple[str, ...], str], *, use_stems: bool, skip: frozenset[str] = frozenset()):
        self._use_stems = use_stems
        self._skip = skip
        self._entries = {tuple(w for w in k if w not in skip): v for k, v in entries.items()} if skip else entries
        self._max = max((len(k) for k in self._entries), default=1)

    def key(self, tokens: list[Token]) -> tuple[str, ...]:
        return tuple(t.stem if self._use_stems else t.norm for t in tokens if t.norm not in self._skip)

    def canonical_names(self) -> set[str]:
        return set(self._entries.values())

    def lookup(self, phrase: str) -> str | None:
        toks = [t for t in tokenize(phrase) if t.kind != "sym"]
        return self._entries.get(self.key(toks))

    def find(self, tokens: list[Token]) -> list[Match]:
        """Non-overlapping matches, left to right, longest first; symbols are skipped."""
        words = [(i, t) for i, t in enumerate(tokens) if (t.kind != "sym" or t.norm in "-") and t.norm not in self._skip]
        keys = [t.stem if self._use_stems else t.norm for _, t in words]
        out: list[Match] = []
        k = 0
        while k < len(words):
            hit = None
            for length in range(min(self._max, len(words) - k), 0, -1):
                # a phrase must not jump over a sentence or clause boundary
                first, last = words[k][0], words[k + length - 1][0]
                if any(tokens[x].norm in ".?!;," for x in range(first, last)):
                    continue
                canon = self._entries.get(tuple(keys[k : k + length]))
                if canon is not None:
                    hit = (canon, length)
                    break
            if hit is None:
                k += 1
                continue
            canon, length = hit
            i0, i1 = words[k][0], words[k + length - 1][0]
            out.append(Match(canon, i0, i1 + 1, tokens[i0].start, tokens[i1].end))
            k += length
        return out


@dataclass(frozen=True)
class DrugLexicon:
    matcher: PhraseLexicon
    generic: dict[str, str]
    """lowercase name → lowercase generic (a generic maps to itself)."""
    names: tuple[str, ...]
    """Every name as written in the file (for ASR hotwords)."""

    def find(self, tokens: list[Token]) -> list[Match]:
        return self.matcher.find(tokens)

    def generic_of(self, name: str) -> str:
        return self.generic.get(name.lower(), name.lower())


def parse_drug_lexicon(path: Path) -> DrugLexicon:
    entries: dict[tuple[str, ...], str] = {}
    generic: dict[str, str] = {}
    names: list[str] = []
    for n, line in _lines(path):
        name, _, comment = (x.strip() for x in line.partition("#"))
        m = re.match(r"brand of\s+(.+)", comment, re.IGNORECASE)
        gen = m.group(1).strip() if m else ""
        if not name:
            raise ValueError(f"{path}:{n}: empty drug name")
        key = tuple(t.norm for t in tokenize(name) if t.kind != "sym")
        if not key:
            raise ValueError(f"{path}:{n}: no letters in drug name {line!r}")
        low = " ".join(key)
        entries[key] = low
        generic[low] = " ".join(t.norm for t in tokenize(gen) if t.kind != "sym") or low
        names.append(name)
    return DrugLexicon(PhraseLexicon(entries, use_stems=False), generic, tuple(names))


def _canonical_finding(name: str) -> str:
    """A finding's canonical name: the first name on its lexicon line, normalised."""
    return " ".join(t.norm for t in tokenize(name) if t.kind != "sym")


def parse_findings_lexicon(path: Path) -> PhraseLexicon:
    entries: dict[tuple[str, ...], str] = {}
    for n, line in _lines(path):
        parts = [p.strip() for p in line.split("|") if p.strip()]
        if not parts:
            raise ValueError(f"{path}:{n}: empty finding")
        canonical = _canonical_finding(parts[0])
        for p in parts:
            key = tuple(stem(t.norm) for t in tokenize(p) if t.kind != "sym")
            if key:
                entries.setdefault(key, canonical)
    return PhraseLexicon(entries, use_stems=True, skip=POSSESSIVES)


POSSESSIVES = frozenset({"my", "your", "his", "her", "their", "our"})
"""Words a finding is said with in whoever's mouth: "blood in your stools", "blood in my stool"
and "blood in his stool" are one finding (PriMock57 dev: "any blood in your stools?" / "no" was
not found, and a draft's "noticed blood in their stools" passed as unmentioned). "The" stays:
"the shakes" is not the verb."""


def parse_finding_groups(path: Path) -> dict[str, str]:
    """Each canonical finding's group: the name of the last ``# ---- group`` line above it."""
    groups: dict[str, str] = {}
    group = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("# ----"):
            group = line.removeprefix("# ----").strip()
        elif line and not line.startswith("#"):
            groups.setdefault(_canonical_finding(line.split("|")[0]), group)
    return groups


@lru_cache(maxsize=8)
def finding_groups(path: str | None = None) -> dict[str, str]:
    """Canonical finding → its group in the findings lexicon ("general", "problems and
    diagnoses", "signs on examination", …)."""
    return parse_finding_groups(Path(path) if path else prompts_dir() / "lexicon" / "findings.txt")


@lru_cache(maxsize=8)
def drug_lexicon(path: str | None = None) -> DrugLexicon:
    """The drug lexicon (``prompts/lexicon/drugs.txt`` unless ``path`` is given)."""
    return parse_drug_lexicon(Path(path) if path else prompts_dir() / "lexicon" / "drugs.txt")


@lru_cache(maxsize=8)
def findings_lexicon(path: str | None = None) -> PhraseLexicon:
    """The symptom/problem lexicon (``prompts/lexicon/findings.txt`` unless ``path``)."""
    return parse_findings_lexicon(Path(path) if path else prompts_dir() / "lexicon" / "findings.txt")


def drug_hotwords() -> list[str]:
    """Drug names to bias speech recognition with (brands and generics, file order)."""
    return list(drug_lexicon().names)
