"""Extract first, generate second: the pure part of the language-model writers.

The extractive drafter has already placed what was said into template sections, one
evidence-linked statement per utterance, and extracted the facts (medications with dose and
status, numbers with units, findings present/denied). Here those statements are cut into small
chunks, turned into chat messages (``prompts/lm/phrase_section.toml``), and the bullets the model
writes back are parsed and *verified*:

* each bullet's evidence is re-linked lexically, only within the segments it cites (or, if it
  cites none, within its chunk's segments);
* the full guard runs on it; a bullet with any flag (no evidence, a number/drug/dose/negation
  the evidence does not support, prompt echo, a loop) is dropped;
* a statement of the chunk that no kept bullet covers (same utterance, and every number and drug
  in it restated) is kept as it was, so nothing said is lost by rephrasing.

So an LM can only make the note shorter and better phrased; it cannot put an unsupported claim
into it silently. No I/O here: the model call is the caller's.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ...models import Evidence, Note, Section, Sentence
from ..facts import Fact, findings_in
from ..guard import GuardContext, check_sentence, link_evidence, strip_citations
from ..numbers import find_quantities, supports
from ..resources import drug_lexicon, prompts_dir
from ..templates import Template, TemplateError, TemplateSection
from ..text import tokenize

CHUNK_STATEMENTS = 10
"""Statements per model call: small enough for a 135M–1.5B model to stay on task and for the
draft to grow visibly, large enough to merge related statements."""
_SEG_ID = re.compile(r"seg-\d+")
_BULLET = re.compile(r"^\s*(?:[-*•‣▪]|\d{1,2}[.)])\s+")
_HEADING = re.compile(r"^\s*(?:#+\s*\S.*|\*\*[^*]+\*\*:?|[A-Z][A-Za-z &/]{2,40}:)\s*$")


@dataclass(frozen=True)
class PhrasePrompt:
    system: str
    user: str
    source: str = "<string>"


def read_prompt_file(path: Path | str | None, default_name: str, fields: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """An LM prompt file (``prompts/lm/<default_name>`` unless ``path``): readable TOML whose
    ``fields`` are strings. Errors name the file and what is wrong with it."""
    p = Path(path) if path else prompts_dir() / "lm" / default_name
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(p, "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise TemplateError(p, f"TOML syntax error: {e}") from None
    missing = [k for k in fields if not isinstance(data.get(k), str)]
    if missing:
        raise TemplateError(p, f"missing required field(s): {', '.join(missing)}")
    return p, {k: data[k] for k in fields}


def load_phrase_prompt(path: Path | str | None = None) -> PhrasePrompt:
    """The section-phrasing prompt (a readable TOML file); errors name the file."""
    p, data = read_prompt_file(path, "phrase_section.toml", ("system", "user"))
    return PhrasePrompt(system=data["system"].strip(), user=data["user"].strip(), source=str(p))


@lru_cache(maxsize=4)
def default_prompt() -> PhrasePrompt:
    return load_phrase_prompt()


# ------------------------------------------------------------------ building the request


@dataclass
class Chunk:
    """Statements of one section that go to the model together."""

    section: TemplateSection
    sources: list[Sentence]
    facts: list[Fact] = field(default_factory=list)

    @property
    def segment_ids(self) -> list[str]:
        return list(dict.fromkeys(e.segment_id for s in self.sources for e in s.evidence))


def plan_chunks(note: Note, template: Template, facts: Sequence[Fact], size: int = CHUNK_STATEMENTS) -> list[Chunk]:
    """Cut the extractive note's sections into chunks of at most ``size`` statements, each with
    the facts stated in its segments."""
    chunks = []
    for sec in note.sections:
        tsec = template.section(sec.key)
        for i in range(0, len(sec.sentences), size):
            part = sec.sentences[i : i + size]
            ids = {e.segment_id for s in part for e in s.evidence}
            fs = [f for f in facts if ids & set(f.segment_ids)]
            chunks.append(Chunk(tsec, part, _dedupe_facts(fs)))
    return chunks


def _dedupe_facts(facts: list[Fact]) -> list[Fact]:
    seen, out = set(), []
    for f in facts:
        k = f.describe()
        if k not in seen:
            seen.add(k)
            out.append(f)
    return out


def _statement_line(s: Sentence) -> str:
    ids = ", ".join(dict.fromkeys(e.segment_id for e in s.evidence))
    return f"[{ids}] {s.text.strip()}"


def messages_for(chunk: Chunk, template: Template, prompt: PhrasePrompt | None = None) -> list[dict[str, str]]:
    """Chat messages (OpenAI format) asking the model to phrase one chunk."""
    prompt = prompt or default_prompt()
    fields = {
        "note_title": template.title,
        "note_instructions": template.instructions.strip(),
        "section_title": chunk.section.title,
        "section_description": chunk.section.description,
        "section_instructions": chunk.section.instructions.strip(),
        "statements": "\n".join(_statement_line(s) for s in chunk.sources),
        "facts": "\n".join(f"- {f.describe()}" for f in chunk.facts) or "- (none)",
    }
    try:
        system = prompt.system.format(**fields)
        user = prompt.user.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise TemplateError(prompt.source, f"unknown or malformed placeholder in the prompt: {e}") from None
    return [{"role": "system", "content": system}, {"role": "user", "content": re.sub(r"\n{3,}", "\n\n", user)}]


# ------------------------------------------------------------------ reading the answer


def parse_bullet(line: str) -> tuple[str, list[str]] | None:
    """One output line → (sentence text without citations, cited segment ids), or None for a
    blank line, a heading or a line with no words."""
    if not line.strip() or _HEADING.match(line) and not _SEG_ID.search(line):
        return None
    ids = list(dict.fromkeys(_SEG_ID.findall(line)))
    text = strip_citations(_BULLET.sub("", line, count=1))
    text = re.sub(r"\[\s*[,;\s]*\]", "", text)  # empty brackets left by stripped ids
    text = re.sub(r"\s+", " ", text).strip(" -*•")
    text = re.sub(r"\s+([.,;:])", r"\1", text).strip()
    if not any(t.kind == "word" for t in tokenize(text)):
        return None
    if text[-1] not in ".!?":
        text += "."
    return text[0].upper() + text[1:], ids


class LineBuffer:
    """Streams of text deltas → complete lines (the draft grows a bullet at a time)."""

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        *lines, self._buf = self._buf.split("\n")
        return lines

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, ""
        return [rest] if rest.strip() else []


# ------------------------------------------------------------------ verifying


def _generics(text: str) -> set[str]:
    lex = drug_lexicon()
    return {lex.generic_of(m.canonical) for m in lex.find(tokenize(text))}


def _findings(text: str) -> set[tuple[str, bool]]:
    return {(f.canonical, f.negated) for f in findings_in(text) if not f.hypothetical}


def _overlaps(a: Evidence, b: Evidence) -> bool:
    return a.segment_id == b.segment_id and (a.quote in b.quote or b.quote in a.quote)


class ChunkVerifier:
    """Accepts or rejects the model's bullets for one chunk and assembles the chunk's sentences."""

    def __init__(self, chunk: Chunk, ctx: GuardContext, *, id_prefix: str, earlier: set[str]):
        self.chunk = chunk
        self.ctx = ctx
        self.id_prefix = id_prefix
        self.earlier = earlier
        self.accepted: list[Sentence] = []
        self.rejected = 0
        self._section = Section(key=chunk.section.key, title=chunk.section.title)

    def offer(self, line: str) -> Sentence | None:
        """Check one output line; returns the kept sentence (or None if rejected/empty)."""
        parsed = parse_bullet(line)
        if parsed is None:
            return None
        text, ids = parsed
        allowed = set(self.chunk.segment_ids)
        cited = [self.ctx.segments[i] for i in ids if i in self.ctx.segments and i in allowed]
        if not cited:
            cited = [self.ctx.segments[i] for i in self.chunk.segment_ids if i in self.ctx.segments]
        evidence = link_evidence(text, cited)
        sentence = Sentence(id=f"{self.id_prefix}.{len(self.accepted)}", text=text, evidence=evidence)
        flags = check_sentence(sentence, self.ctx, self._section, earlier=self.earlier)
        if flags or (ids and not set(ids) <= allowed):
            self.rejected += 1
            return None
        key = " ".join(t.norm for t in tokenize(text) if t.kind != "sym")
        self.earlier.add(key)
        self.accepted.append(sentence)
        return sentence

    def _covered(self, source: Sentence) -> bool:
        covering = [s for s in self.accepted if any(_overlaps(e, f) for e in s.evidence for f in source.evidence)]
        if not covering:
            return False
        said = " ".join(s.text for s in covering)
        claims = find_quantities(said)
        if any(not any(supports(c, q) or supports(q, c) for c in claims) for q in find_quantities(source.text)):
            return False
        if not _generics(source.text) <= _generics(said):
            return False
        return _findings(source.text) <= _findings(said)

    def sentences(self) -> list[Sentence]:
        """Kept bullets, then (in order) the statements no kept bullet covers."""
        return self.accepted + [s for s in self.chunk.sources if not self._covered(s)]

    @property
    def kept_sources(self) -> int:
        return sum(1 for s in self.chunk.sources if not self._covered(s))


__all__ = [
    "CHUNK_STATEMENTS",
    "Chunk",
    "ChunkVerifier",
    "LineBuffer",
    "PhrasePrompt",
    "load_phrase_prompt",
    "messages_for",
    "parse_bullet",
    "plan_chunks",
]
