"""A note as plain text or Markdown: deterministic (same note, same bytes), no timestamps.

``evidence=True`` appends the segment ids a sentence rests on (``[seg-00003, seg-00004]``);
``flags=True`` lists open flags under their sentence and the omissions at the end, which is
what a reviewer needs before signing.
"""

from __future__ import annotations

import re

from ..models import Flag, Note, Sentence

EMPTY = "Nothing recorded."
_MD_ESCAPE = re.compile(r"([\\`*_\[\]<>|])")


def _refs(s: Sentence) -> str:
    ids = list(dict.fromkeys(e.segment_id for e in s.evidence))
    return f" [{', '.join(ids)}]" if ids else " [no evidence]"


def _open_flags(s: Sentence) -> list[Flag]:
    return [f for f in s.flags if not f.resolved]


def render_text(note: Note, *, evidence: bool = False, flags: bool = False) -> str:
    lines = [note.title, ""]
    for sec in note.sections:
        lines.append(sec.title.upper())
        if not sec.sentences:
            lines.append(EMPTY)
        for s in sec.sentences:
            lines.append(f"- {s.text.strip()}" + (_refs(s) if evidence else ""))
            if flags:
                for f in _open_flags(s):
                    lines.append(f"    ! {f.kind}: {f.message}")
        lines.append("")
    if flags and note.omissions:
        lines.append("NOT IN THE NOTE (said in the visit)")
        lines += [f"- {o}" for o in note.omissions]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def md_escape(text: str) -> str:
    return _MD_ESCAPE.sub(r"\\\1", text)


def render_markdown(note: Note, *, evidence: bool = False, flags: bool = False) -> str:
    lines = [f"# {md_escape(note.title)}", ""]
    for sec in note.sections:
        lines += [f"## {md_escape(sec.title)}", ""]
        if not sec.sentences:
            lines += [f"*{EMPTY}*", ""]
            continue
        for s in sec.sentences:
            ref = f" `{_refs(s).strip()}`" if evidence else ""
            lines.append(f"- {md_escape(s.text.strip())}{ref}")
            if flags:
                for f in _open_flags(s):
                    lines.append(f"  - ⚠ **{f.kind}**: {md_escape(f.message)}")
        lines.append("")
    if flags and note.omissions:
        lines += ["## Not in the note", ""]
        lines += [f"- {md_escape(o)}" for o in note.omissions]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["render_markdown", "render_text", "md_escape"]
