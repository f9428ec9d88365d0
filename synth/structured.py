"""Structured output across real OpenAI-compatible servers.

OpenAI, vLLM, SGLang and recent Ollama accept ``response_format: {"type": "json_schema"}``;
llama.cpp's servers and some proxies accept only ``json_object`` or ``text`` (llama-cpp-python
answers 500 with a validation error, others 400 or 422); a few accept no ``response_format``
at all. A run therefore starts at the strictest shape and steps down, once per run, when a
server rejects it: ``json_schema`` -> ``json_object`` -> ``prompt`` (no ``response_format``;
the schema is written into the system prompt). The answer is parsed and schema-checked the
same way in every mode (``synth.prompts.parse_item_analysis``), so the corpus does not
depend on the mode, and the cache key (the engine's request) does not either.
"""
from __future__ import annotations

import json
import re

JSON_SCHEMA, JSON_OBJECT, PROMPT = "json_schema", "json_object", "prompt"
MODES = (JSON_SCHEMA, JSON_OBJECT, PROMPT)
AUTO = "auto"

# A 500 is a rejection of the shape only when its body says so (llama-cpp-python's
# pydantic error names the field); any other 500 is a transient fault.
_SHAPE_WORDS = re.compile(r"response_format|json_schema|json_object|structured.output|guided_json",
                          re.IGNORECASE)


def start_mode(setting: str = AUTO) -> str:
    """The mode a run starts in: ``auto`` starts strict; a named mode is forced."""
    if setting == AUTO:
        return JSON_SCHEMA
    if setting not in MODES:
        raise ValueError(f"STRUCTURED_OUTPUT={setting!r}: expected one of {(AUTO, *MODES)}")
    return setting


def next_mode(mode: str) -> str | None:
    """The next, looser mode, or None when there is none left."""
    i = MODES.index(mode)
    return MODES[i + 1] if i + 1 < len(MODES) else None


def rejects_shape(status: int, body: str) -> bool:
    """Did the server refuse the request's ``response_format`` (rather than fail)?

    Called only for requests that carried one: any 400/422 counts (the shape is the one
    non-standard part of our request), and a 500 whose body names the structured output."""
    if status in (400, 422):
        return True
    return status == 500 and bool(_SHAPE_WORDS.search(body or ""))


def shape_body(body: dict, response_format: dict | None, mode: str) -> dict:
    """The request body for ``mode``; ``body`` has no ``response_format`` yet and is not changed.

    ``json_object`` and ``prompt`` cannot carry the schema, so the system turn gets it as text:
    the answer is still validated against the full schema after it arrives."""
    if response_format is None:
        return body
    if mode == JSON_SCHEMA:
        return {**body, "response_format": response_format}
    schema = (response_format.get("json_schema") or {}).get("schema")
    hint = ("\n\nAnswer with one JSON object only (no code fence, no text around it)"
            + (f" that matches this JSON Schema: {json.dumps(schema, separators=(',', ':'))}" if schema else "")
            + ".")
    messages = [dict(m) for m in body["messages"]]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = f"{messages[0]['content']}{hint}"
    else:
        messages.insert(0, {"role": "system", "content": hint.strip()})
    out = {**body, "messages": messages}
    if mode == JSON_OBJECT:
        out["response_format"] = {"type": "json_object"}
    return out
