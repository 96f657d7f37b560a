"""Note drafting, pure core: templates, fact extraction, the evidence guard, the extractive
writer and rendering. No language model and no I/O beyond reading ``prompts/`` files.

    from scribe.notes import draft, check_note, render_markdown
    note = draft(segments, encounter_id="enc-1", template="soap")
"""

from .extractive import IncrementalDrafter, UnsupportedLanguage, draft
from .facts import Fact, FactKind, MedStatus, extract_facts
from .guard import check_note, link_evidence
from .render import render_markdown, render_text
from .templates import Template, TemplateError, available_templates, load_template

__all__ = [
    "Fact",
    "FactKind",
    "IncrementalDrafter",
    "MedStatus",
    "Template",
    "TemplateError",
    "UnsupportedLanguage",
    "available_templates",
    "check_note",
    "draft",
    "extract_facts",
    "link_evidence",
    "load_template",
    "render_markdown",
    "render_text",
]
