"""Note templates: readable TOML files in ``prompts/templates/`` plus a site's own folder.

``load_template("soap")`` returns the built-in SOAP template; ``load_template("clinic",
site_dir=...)`` finds a site template (a site template with the same name as a built-in one
replaces it); ``load_template("path/to/x.toml")`` loads one file. A file with a TOML syntax
error or a missing/invalid field raises ``TemplateError`` naming the file, the line where
TOML gives one, and the field.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Iterable

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .resources import prompts_dir

# What an utterance can be about; templates route these to their sections.
CATEGORIES: tuple[str, ...] = (
    "chief_complaint",
    "hpi",
    "ros",
    "pmh",
    "psh",
    "medications",
    "allergies",
    "social_family",
    "exam",
    "results",
    "assessment",
    "plan",
)
# where a category goes when a template does not cover it: the first covered one in this list
_FALLBACK: dict[str, tuple[str, ...]] = {
    "chief_complaint": ("hpi", "assessment"),
    "hpi": ("chief_complaint", "ros", "pmh", "assessment"),
    "ros": ("hpi", "exam"),
    "pmh": ("hpi", "psh", "medications"),
    "psh": ("pmh", "hpi"),
    "medications": ("pmh", "hpi", "plan"),
    "allergies": ("medications", "pmh", "hpi"),
    "social_family": ("pmh", "hpi"),
    "exam": ("results", "assessment"),
    "results": ("exam", "assessment"),
    "assessment": ("plan", "results"),
    "plan": ("assessment",),
}
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class TemplateError(ValueError):
    """A template file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateSection(_Strict):
    key: str
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    covers: list[str] = Field(min_length=1)
    cues: list[str] = Field(default_factory=list)
    instructions: str = ""

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _KEY_RE.match(v):
            raise ValueError("must be lowercase letters, digits and _ , starting with a letter")
        return v

    @field_validator("covers")
    @classmethod
    def _covers(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown kind(s) {unknown}; known kinds: {', '.join(CATEGORIES)}")
        return v


class Template(_Strict):
    name: str
    title: str = Field(min_length=1)
    description: str = ""
    loinc: str
    loinc_display: str = ""
    instructions: str = Field(min_length=1)
    sections: list[TemplateSection] = Field(min_length=1)
    source: str = Field(default="", exclude=True)
    """The file it was read from (set by the loader)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _KEY_RE.match(v):
            raise ValueError("must be lowercase letters, digits and _ , starting with a letter")
        return v

    @field_validator("loinc")
    @classmethod
    def _loinc(cls, v: str) -> str:
        if not re.fullmatch(r"\d{1,7}-\d", v):
            raise ValueError("must be a LOINC code such as 11506-3")
        return v

    @model_validator(mode="after")
    def _unique(self) -> "Template":
        keys = [s.key for s in self.sections]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"duplicate section key(s): {', '.join(dup)}")
        seen: dict[str, str] = {}
        for s in self.sections:
            for c in s.covers:
                if c in seen:
                    raise ValueError(f"kind {c!r} is covered by both {seen[c]!r} and {s.key!r}")
                seen[c] = s.key
        return self

    # -------------------------------------------------------------- routing

    def section_for(self, category: str) -> TemplateSection:
        """The section an utterance of ``category`` goes to (falls back to a related one)."""
        for cat in (category, *_FALLBACK.get(category, ())):
            for s in self.sections:
                if cat in s.covers:
                    return s
        return self.sections[-1] if category in ("assessment", "plan") else self.sections[0]

    def section(self, key: str) -> TemplateSection:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.sections]


# ---------------------------------------------------------------- loading


def _format_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(f"[{x}]" if isinstance(x, int) else str(x) for x in e.get("loc", ())).replace(
            ".[", "["
        )
        msg = e.get("msg", "invalid")
        if e.get("type") == "missing":
            msg = "missing required field"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{loc or 'template'}: {msg}")
    return "; ".join(parts)


def parse_template(text: str, source: Path | str = "<string>") -> Template:
    """Parse and validate template text; errors name ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TemplateError(source, f"TOML syntax error: {e}") from None
    try:
        return Template.model_validate({**data, "source": str(source)})
    except ValidationError as e:
        raise TemplateError(source, _format_validation(e)) from None


def load_template_file(path: Path | str) -> Template:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(p, "file not found") from None
    except UnicodeDecodeError as e:
        raise TemplateError(p, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_template(text, p)


def builtin_dir() -> Path:
    return prompts_dir() / "templates"


def _scan(directory: Path) -> dict[str, Template]:
    out: dict[str, Template] = {}
    for p in sorted(directory.glob("*.toml")):
        t = load_template_file(p)
        if t.name in out:
            raise TemplateError(p, f"template name {t.name!r} is also used by {out[t.name].source}")
        out[t.name] = t
    return out


def available_templates(site_dir: Path | str | None = None) -> dict[str, Template]:
    """Built-in templates, then the site's (a site template replaces a built-in of the same name).

    Raises ``TemplateError`` for the first invalid file, and if ``site_dir`` does not exist.
    """
    templates = _scan(builtin_dir())
    if site_dir is not None:
        d = Path(site_dir)
        if not d.is_dir():
            raise TemplateError(d, "site template directory does not exist")
        templates.update(_scan(d))
    return templates


def load_template(name: str = "soap", site_dir: Path | str | None = None) -> Template:
    """A template by name (built-in or site), or by path to a ``.toml`` file."""
    if name.endswith(".toml") or "/" in name or "\\" in name:
        return load_template_file(name)
    if site_dir is not None:
        # look in the site folder first, without requiring every built-in to parse
        d = Path(site_dir)
        if not d.is_dir():
            raise TemplateError(d, "site template directory does not exist")
        site = _scan(d)
        if name in site:
            return site[name]
    p = builtin_dir() / f"{name}.toml"
    if p.is_file():
        t = load_template_file(p)
        if t.name == name:
            return t
    builtins = _scan(builtin_dir())
    if name in builtins:
        return builtins[name]
    known = sorted(set(builtins) | (set(_scan(Path(site_dir))) if site_dir else set()))
    raise KeyError(f"no template named {name!r}; available: {', '.join(known)}")


def template_names(site_dir: Path | str | None = None) -> list[str]:
    return sorted(available_templates(site_dir))


def categories_covered(templates: Iterable[Template]) -> set[str]:
    return {c for t in templates for s in t.sections for c in s.covers}
