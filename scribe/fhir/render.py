"""Render a note as the text that goes into the EHR: plain text, Markdown or XHTML.

Pure and deterministic: the same ``Note`` always gives the same string (Unicode NFC, ``\\n`` line
endings, one trailing newline), so the bytes, their size and their SHA-1 in the FHIR attachment are
stable. The caller encodes to UTF-8.

Layout (plain text)::

    SOAP note

    Subjective
    First sentence. Second sentence.

    Assessment
    ...

The title, then one block per section: the section title on its own line, then the section's
sentences joined into one paragraph. Sections without sentences are left out. A sentence whose
flag the clinician resolved by deleting it (``resolution == "deleted"``) is left out as well.
Evidence, flags and omissions are review aids and never appear in the chart text.
"""

from __future__ import annotations

import html
import re
import unicodedata
from enum import StrEnum

from scribe.models import Note, Sentence


class TextFormat(StrEnum):
    plain = "plain"
    markdown = "markdown"
    xhtml = "xhtml"


def _clean(text: str) -> str:
    """NFC, no control characters, runs of whitespace collapsed to one space, trimmed."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def _kept(sentence: Sentence) -> bool:
    return not any(f.resolved and f.resolution == "deleted" for f in sentence.flags)


def _sections(note: Note) -> list[tuple[str, list[str]]]:
    """(title, sentence texts) for each section that has something to say."""
    out: list[tuple[str, list[str]]] = []
    for section in note.sections:
        texts = [t for t in (_clean(s.text) for s in section.sentences if _kept(s)) if t]
        if texts:
            out.append((_clean(section.title) or _clean(section.key), texts))
    return out


def render_plain(note: Note) -> str:
    blocks = [_clean(note.title)]
    for title, texts in _sections(note):
        blocks.append(f"{title}\n{' '.join(texts)}")
    return "\n\n".join(b for b in blocks if b) + "\n"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")
_MD_BLOCK_START = re.compile(r"^(\d+)([.)])|^([-+=])")


def _md_escape(text: str) -> str:
    text = _MD_SPECIAL.sub(r"\\\1", text)
    # A paragraph that starts like a list item or setext underline would change meaning.
    return _MD_BLOCK_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", text)


def render_markdown(note: Note) -> str:
    blocks = [f"# {_md_escape(_clean(note.title))}"]
    for title, texts in _sections(note):
        blocks.append(f"## {_md_escape(title)}\n\n{_md_escape(' '.join(texts))}")
    return "\n\n".join(blocks) + "\n"


def render_xhtml(note: Note) -> str:
    """A small, well-formed XHTML document (served as ``text/html``)."""
    title = html.escape(_clean(note.title), quote=True)
    body = [f"<h1>{title}</h1>"]
    for sec_title, texts in _sections(note):
        body.append(f"<h2>{html.escape(sec_title)}</h2>")
        body.append(f"<p>{html.escape(' '.join(texts))}</p>")
    return (
        '<html xmlns="http://www.w3.org/1999/xhtml">\n'
        f'<head><meta charset="utf-8"/><title>{title}</title></head>\n'
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def render_note(note: Note, fmt: TextFormat | str = TextFormat.plain) -> str:
    fmt = TextFormat(fmt)
    if fmt is TextFormat.markdown:
        return render_markdown(note)
    if fmt is TextFormat.xhtml:
        return render_xhtml(note)
    return render_plain(note)


__all__ = ["TextFormat", "render_markdown", "render_note", "render_plain", "render_xhtml"]
