"""The four enrichment prompts (paper section 3.2.3, Appendix C) and what they see.

Templates live in ``prompts/synth/`` as ``<step>.system.j2`` and ``<step>.user.j2``
(plus ``item_analysis.schema.json``, the stage-1 answer's JSON schema). They are the
only template *source* the toolkit compiles, in a sandboxed Jinja environment. Item
text (titles, descriptions, a teacher's reasoning) only ever enters as data values:
a description holding ``{{ 7*7 }}`` or ``{% ... %}`` comes out verbatim, never run.

Each step's hash covers its template files (and the schema for ``item_analysis``), so
editing a prompt changes the cache key and the manifest: a new corpus, the old kept.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import jsonschema
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2 import meta as jinja2_meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from synth.errors import UserError
from synth.sid import sid_string

if TYPE_CHECKING:
    from synth.data.dataset import Item, Sample

STEPS = ("item_analysis", "item_integration", "user_reasoning", "user_narrative")
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "prompts" / "synth"
SCHEMA_FILE = "item_analysis.schema.json"

# Approximate tokens: a word is about 1.3 tokens, and a "word" of a hostile text may be
# a 100 KB run without spaces, so a hard character cap bounds the prompt as well.
CHARS_PER_TOKEN_CAP = 6


class PromptsError(UserError, FileNotFoundError):
    """A prompt folder that lacks templates: names them and what to do."""


class OutputFormatError(ValueError):
    """A teacher answer that does not have the required form; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def truncate_tokens(text: str, max_tokens: int) -> str:
    """Cut ``text`` to about ``max_tokens`` tokens (words, and at most 6 characters each)."""
    text = text or ""
    limit_chars = max_tokens * CHARS_PER_TOKEN_CAP
    words = text.split()
    # 0.75 words per token: a common rule of thumb for English BPE vocabularies.
    max_words = max(1, int(max_tokens * 0.75))
    cut = len(words) > max_words or len(text) > limit_chars
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    if len(text) > limit_chars:
        text = text[:limit_chars]
    return text + " ..." if cut else text


class PromptSet:
    """The templates of one prompt folder, compiled once, rendered per request."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else DEFAULT_DIR
        missing = [f"{s}.{r}.j2" for s in STEPS for r in ("system", "user")
                   if not (self.directory / f"{s}.{r}.j2").is_file()]
        if not (self.directory / SCHEMA_FILE).is_file():
            missing.append(SCHEMA_FILE)
        if missing:
            raise PromptsError(
                f"prompt folder {self.directory} lacks {', '.join(missing)}: "
                f"copy them from {DEFAULT_DIR} or point PROMPTS_DIR (--prompts-dir) at a complete folder"
            )
        # Sandboxed, immutable, strict: a template may not touch Python internals or
        # mutate its data, and a missing variable is an error instead of an empty string.
        self.env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(self.directory)),
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self._templates = {
            (step, role): self.env.get_template(f"{step}.{role}.j2")
            for step in STEPS for role in ("system", "user")
        }
        # A template that reads no variable renders the same text every time: render it once
        # (a sandboxed render costs mostly the building of its context, per request).
        self._constant: dict[tuple[str, str], str] = {}
        for (step, role), template in self._templates.items():
            source = (self.directory / f"{step}.{role}.j2").read_text(encoding="utf-8")
            if not jinja2_meta.find_undeclared_variables(self.env.parse(source)):
                self._constant[(step, role)] = template.render().strip()
        schema_text = (self.directory / SCHEMA_FILE).read_text(encoding="utf-8")
        self.schema = json.loads(schema_text)
        jsonschema.Draft202012Validator.check_schema(self.schema)
        self._validator = FastValidator(self.schema)
        self._hashes = {}
        for step in STEPS:
            h = hashlib.sha256()
            files = [f"{step}.system.j2", f"{step}.user.j2"]
            if step == "item_analysis":
                files.append(SCHEMA_FILE)
            for name in files:
                h.update(name.encode() + b"\0")
                h.update((self.directory / name).read_bytes() + b"\0")
            self._hashes[step] = h.hexdigest()

    def render(self, step: str, context: dict) -> list[dict]:
        """Chat messages for ``step``; context values are data, never template source."""
        self._check_step(step)
        constant = self._constant
        return [
            {"role": role, "content": constant[(step, role)] if (step, role) in constant
             else self._templates[(step, role)].render(**context).strip()}
            for role in ("system", "user")
        ]

    def hashes(self) -> dict[str, str]:
        return dict(self._hashes)

    def response_format(self, step: str) -> dict | None:
        """OpenAI ``json_schema`` structured output for item_analysis; None for free text.

        Strict mode accepts only a subset of JSON Schema, so the length and count bounds
        are dropped here and enforced by ``parse_item_analysis`` instead."""
        self._check_step(step)
        if step != "item_analysis":
            return None
        return {
            "type": "json_schema",
            "json_schema": {"name": "item_analysis", "strict": True,
                            "schema": _strict_subset(self.schema)},
        }

    def parse_item_analysis(self, text: str) -> dict:
        return _parse_item_analysis(text, self._validator)

    @staticmethod
    def _check_step(step: str) -> None:
        if step not in STEPS:
            raise ValueError(f"unknown prompt step {step!r}; expected one of {STEPS}")


_UNSUPPORTED_STRICT = {"minLength", "maxLength", "minItems", "maxItems", "pattern", "format"}


def _strict_subset(schema):
    if isinstance(schema, dict):
        return {k: _strict_subset(v) for k, v in schema.items() if k not in _UNSUPPORTED_STRICT}
    if isinstance(schema, list):
        return [_strict_subset(v) for v in schema]
    return schema


# --- contexts -------------------------------------------------------------------------

def truncate_list(texts: list[str], max_tokens: int) -> list[str]:
    """The first texts of ``texts`` that fit in about ``max_tokens`` tokens together; the
    one that crosses the budget is cut (``truncate_tokens``), the rest dropped."""
    out: list[str] = []
    left = max_tokens
    for text in texts or ():
        if left <= 0:
            break
        cut = truncate_tokens(text or "", left)
        out.append(cut)
        left -= max(1, len(cut) // CHARS_PER_TOKEN_CAP, int(len(cut.split()) / 0.75))
    return out


def item_context(item: "Item", sid: str, max_description_tokens: int = 512,
                 max_feature_tokens: int = 256) -> dict:
    """What the item templates see (step 2 adds ``insights``)."""
    return {
        "item_id": item.item_id,
        "sid": sid if isinstance(sid, str) else sid_string(sid),
        "title": item.title or "",
        "brand": item.brand or "",
        "categories": list(item.categories or []),
        "description": truncate_tokens(item.description or "", max_description_tokens),
        "features": truncate_list(list(getattr(item, "features", None) or []), max_feature_tokens),
    }


def user_context(sample: "Sample", items: dict[str, "Item"], sids: dict[str, list[str]],
                 max_description_tokens: int = 96) -> dict:
    """What the user templates see (step 2 adds ``reasoning``): the history with titles,
    truncated descriptions and SIDs, and the next item (title and SID): stage 1 shows only its
    title, for guidance, and must stay blind to it; stage 2 ends by recommending it by SID."""
    def entry(iid: str) -> dict:
        it = items[iid]
        return {
            "item_id": iid,
            "sid": sid_string(sids[iid]),
            "title": it.title or "",
            "brand": it.brand or "",
            "categories": list(it.categories or []),
            "description": truncate_tokens(it.description or "", max_description_tokens),
        }

    missing = [i for i in [*sample.history, sample.target] if i not in items or i not in sids]
    if missing:
        raise KeyError(
            f"user {sample.user_id}: item(s) {', '.join(missing[:5])} lack metadata or a SID: "
            "re-run `make data` and `make sids` for this dataset"
        )
    history = [entry(i) for i in sample.history]
    target = entry(sample.target)
    return {
        "user_id": sample.user_id,
        "history": history,
        "history_sids": [h["sid"] for h in history],
        "history_length": len(history),
        "target": {"item_id": target["item_id"], "sid": target["sid"], "title": target["title"],
                   "brand": target["brand"]},
    }


# --- parsing answers --------------------------------------------------------------------

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def clean_generation(text: str) -> str:
    """Strip what reasoning teachers wrap around an answer: ``<think>`` blocks (an
    unclosed one means the answer never came) and a surrounding code fence."""
    text = _THINK_RE.sub("", text or "")
    if re.search(r"<think>", text, re.IGNORECASE):
        return ""
    # A stray closing tag: the opening one was in the prompt (Qwen3 templates do this).
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    text = text.strip()
    m = _FENCE_RE.match(text)
    if m:
        text = m.group(1).strip()
    return text


class FastValidator:
    """jsonschema's verdict at a fraction of its cost, for the simple schemas stage 1 uses.

    Validating every stage-1 answer with ``jsonschema`` costs more CPU than the rest of the
    engine's work on it (bench/README.md), so a schema made only of the keywords below is
    compiled into plain Python checks; a schema with any other keyword is left to
    jsonschema. Only the yes/no runs here: an invalid answer (rare) is re-checked by
    jsonschema for its error messages, so those are jsonschema's exactly."""

    KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items", "minItems",
                          "maxItems", "minLength", "maxLength", "enum", "description", "title"})
    TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}

    def __init__(self, schema: dict):
        self.schema = schema
        self._full = jsonschema.Draft202012Validator(schema)
        self._check = self._compile(schema)

    def _compile(self, schema):
        """A predicate for ``schema``, or None when it uses anything beyond KEYWORDS."""
        if not isinstance(schema, dict) or set(schema) - self.KEYWORDS:
            return None
        t = schema.get("type")
        if t not in self.TYPES:
            return None
        kind = self.TYPES[t]
        lo_len, hi_len = schema.get("minLength", 0), schema.get("maxLength")
        lo_n, hi_n = schema.get("minItems", 0), schema.get("maxItems")
        enum = schema.get("enum")
        props = {}
        for name, sub in (schema.get("properties") or {}).items():
            props[name] = self._compile(sub)
            if props[name] is None:
                return None
        required = tuple(schema.get("required") or ())
        extra = schema.get("additionalProperties", True)
        if not isinstance(extra, bool):
            return None
        item = None
        if "items" in schema:
            item = self._compile(schema["items"])
            if item is None:
                return None

        def check(v) -> bool:
            if type(v) is not kind:  # bool is not an int here; JSON has no subclasses
                return False
            if enum is not None and v not in enum:
                return False
            if kind is str:
                return len(v) >= lo_len and (hi_len is None or len(v) <= hi_len)
            if kind is list:
                return (len(v) >= lo_n and (hi_n is None or len(v) <= hi_n)
                        and (item is None or all(item(x) for x in v)))
            if kind is dict:
                if any(r not in v for r in required):
                    return False
                for k, x in v.items():
                    sub = props.get(k)
                    if sub is None:
                        if not extra and k not in props:
                            return False
                    elif not sub(x):
                        return False
            return True

        return check

    def iter_errors(self, data):
        if self._check is not None and self._check(data):
            return iter(())
        return self._full.iter_errors(data)


_DEFAULT_VALIDATOR: FastValidator | None = None


def parse_item_analysis(text: str) -> dict:
    """Stage-1 JSON -> validated insights dict; raises OutputFormatError."""
    global _DEFAULT_VALIDATOR
    if _DEFAULT_VALIDATOR is None:
        schema = json.loads((DEFAULT_DIR / SCHEMA_FILE).read_text(encoding="utf-8"))
        _DEFAULT_VALIDATOR = FastValidator(schema)
    return _parse_item_analysis(text, _DEFAULT_VALIDATOR)


def _parse_item_analysis(text: str, validator) -> dict:
    body = clean_generation(text)
    if not body:
        raise OutputFormatError("empty", "the teacher returned no answer")
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        # Some teachers add a sentence around the object: take the outermost braces.
        start, end = body.find("{"), body.rfind("}")
        try:
            data = json.loads(body[start:end + 1]) if 0 <= start < end else None
        except json.JSONDecodeError:
            data = None
        if data is None:
            raise OutputFormatError("bad_json", f"not a JSON object: {body[:80]!r}") from None
    if not isinstance(data, dict):
        raise OutputFormatError("bad_json", "the answer is JSON but not an object")
    # Normalise before validating: trim strings, drop empty and repeated list entries.
    for key, value in list(data.items()):
        if isinstance(value, str):
            data[key] = value.strip()
        elif isinstance(value, list):
            seen, out = set(), []
            for v in value:
                v = v.strip() if isinstance(v, str) else v
                if v and (not isinstance(v, str) or v.casefold() not in seen):
                    seen.add(v.casefold() if isinstance(v, str) else v)
                    out.append(v)
            data[key] = out
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(root)"
        raise OutputFormatError("schema", f"{where}: {e.message[:160]}")
    return data


_LIST_LINE_RE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|#+)\s+", re.MULTILINE)
_SENTENCE_RE = re.compile(r"[.!?](?:\s|$)")


def paragraph_problems(text: str, min_sentences: int = 0) -> list[str]:
    """Form checks for a stage-2 paragraph: "empty", "list" (bullets, numbering,
    headings), "too_short" (fewer than ``min_sentences`` sentences)."""
    text = (text or "").strip()
    if not text:
        return ["empty"]
    problems = []
    if _LIST_LINE_RE.search(text):
        problems.append("list")
    if min_sentences and len(_SENTENCE_RE.findall(text + " ")) < min_sentences:
        problems.append("too_short")
    return problems
