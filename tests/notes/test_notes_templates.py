"""Note templates: the built-ins load, route every kind of utterance, and a broken file says
which file and what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scribe.notes.resources import prompts_dir
from scribe.notes.templates import (
    CATEGORIES,
    TemplateError,
    available_templates,
    load_template,
    load_template_file,
    parse_template,
)

GOOD = """
name = "clinic"
title = "Clinic note"
loinc = "11506-3"
instructions = "Write it."

[[sections]]
key = "story"
title = "Story"
description = "What happened."
covers = ["chief_complaint", "hpi", "ros"]

[[sections]]
key = "plan"
title = "Plan"
description = "What next."
covers = ["plan", "assessment"]
"""


def test_builtins_load_with_their_loinc_codes():
    ts = available_templates()
    assert {"soap", "hp", "progress", "consult"} <= set(ts)
    assert ts["soap"].loinc == "11506-3"
    assert ts["progress"].loinc == "11506-3"
    assert ts["hp"].loinc == "34117-2"
    assert ts["consult"].loinc == "11488-4"
    assert [s.key for s in ts["soap"].sections] == ["subjective", "objective", "assessment", "plan"]


def test_soap_is_the_default():
    assert load_template().name == "soap"


@pytest.mark.parametrize("name", ["soap", "hp", "progress", "consult"])
def test_every_kind_has_a_home_and_every_section_explains_itself(name):
    t = load_template(name)
    assert t.instructions.strip() and t.title
    for s in t.sections:
        assert s.description.strip() and s.cues, s.key
    for cat in CATEGORIES:
        assert t.section_for(cat).key in t.keys
    # plan content lands in a plan-like section, exam findings in an exam/objective one
    assert any(w in t.section_for("plan").key for w in ("plan", "recommend"))
    assert t.section_for("exam").key in ("objective", "exam")


def test_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text('name = "broken"\ntitle = "Broken\nloinc = "1-1"\n', encoding="utf-8")
    with pytest.raises(TemplateError) as e:
        load_template_file(p)
    msg = str(e.value)
    assert "broken.toml" in msg and "TOML syntax error" in msg and "line 2" in msg


def test_missing_and_misspelt_fields_are_named():
    text = GOOD.replace('loinc = "11506-3"\n', "").replace('key = "story"', 'kye = "story"')
    with pytest.raises(TemplateError) as e:
        parse_template(text, "site/clinic.toml")
    msg = str(e.value)
    assert msg.startswith("site/clinic.toml: ")
    assert "loinc: missing required field" in msg
    assert "sections[0].key: missing required field" in msg
    assert "sections[0].kye: unknown field" in msg


def test_unknown_kind_and_duplicates_are_rejected():
    with pytest.raises(TemplateError, match="unknown kind.*histroy.*known kinds: chief_complaint"):
        parse_template(GOOD.replace('"hpi"', '"histroy"'), "x.toml")
    with pytest.raises(TemplateError, match="duplicate section key"):
        parse_template(GOOD.replace('key = "plan"', 'key = "story"'), "x.toml")
    with pytest.raises(TemplateError, match="covered by both"):
        parse_template(GOOD.replace('covers = ["plan", "assessment"]', 'covers = ["plan", "hpi"]'), "x.toml")
    with pytest.raises(TemplateError, match="LOINC"):
        parse_template(GOOD.replace("11506-3", "progress"), "x.toml")


def test_site_templates_add_and_replace(tmp_path):
    (tmp_path / "clinic.toml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "soap.toml").write_text(
        GOOD.replace('name = "clinic"', 'name = "soap"').replace("Clinic note", "Our SOAP"), encoding="utf-8"
    )
    t = load_template("clinic", site_dir=tmp_path)
    assert t.keys == ["story", "plan"]
    # kinds the template does not cover fall back to a related section
    assert t.section_for("exam").key in t.keys
    assert load_template("soap", site_dir=tmp_path).title == "Our SOAP"
    assert load_template("soap").title == "SOAP note"
    names = set(available_templates(tmp_path))
    assert {"clinic", "soap", "hp", "consult", "progress"} <= names


def test_bad_site_file_and_missing_names_are_clear(tmp_path):
    (tmp_path / "oops.toml").write_text("name = [", encoding="utf-8")
    with pytest.raises(TemplateError, match="oops.toml"):
        available_templates(tmp_path)
    with pytest.raises(KeyError, match="available: consult, hp, progress, soap"):
        load_template("nonesuch")
    with pytest.raises(TemplateError, match="does not exist"):
        load_template("soap", site_dir=tmp_path / "missing")
    with pytest.raises(TemplateError, match="file not found"):
        load_template(str(tmp_path / "absent.toml"))


def test_load_by_path_and_env_override(tmp_path, monkeypatch):
    p = tmp_path / "mine.toml"
    p.write_text(GOOD, encoding="utf-8")
    assert load_template(str(p)).name == "clinic"
    copy = tmp_path / "prompts"
    shutil.copytree(prompts_dir(), copy)
    (copy / "templates" / "extra.toml").write_text(GOOD.replace('"clinic"', '"extra"'), encoding="utf-8")
    monkeypatch.setenv("SCRIBE_PROMPTS_DIR", str(copy))
    assert prompts_dir() == copy
    assert "extra" in available_templates()


def test_builtin_files_are_readable_plain_text():
    for p in sorted((prompts_dir() / "templates").glob("*.toml")):
        text = p.read_text(encoding="utf-8")
        assert text.startswith("#"), f"{p.name} should open with a comment a clinician can read"
        assert Path(load_template_file(p).source) == p
