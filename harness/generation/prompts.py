"""The reference study's summarisation prompts, rendered to token ids exactly once.

Chrysostomou et al. (TACL 2024) prompt every model with one system message and one of three
instructions, each laid out as ``{instruction}\\n\\n{document}\\n\\nThe summary is:``. How
that text reaches the model depends on the model's family (its "layout"):

- ``chat``: the tokenizer's own chat template (system + user message). The template writes
  any BOS itself, so the rendered text is tokenized without adding special tokens.
- ``llama``: the Llama-2 chat format written here, for checkpoints whose tokenizer lacks a
  template; the tokenizer adds its BOS.
- ``opt-iml`` / ``none``: the instruction layout as plain text (OPT-IML was prompted with
  the instruction only, no system message); the tokenizer adds its BOS.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import PrunescopeError

SYSTEM_MESSAGE = "You are a helpful assistant that summarizes truthfully any document given."
INSTRUCTIONS = {
    "A": "Summarize in a single short paragraph the context below:",
    "B": "Summarize in a couple of sentences the document below:",
    "C": "Give me a short summary of the below:",
}
DOCUMENT_SLOT = "{document}"
LAYOUT = "{instruction}\n\n{document}\n\nThe summary is:"
LAYOUTS = ("chat", "llama", "opt-iml", "none")


class PromptError(PrunescopeError):
    """A prompt id or chat family that cannot be used."""


@dataclass(frozen=True)
class PromptTemplate:
    """The user message of one prompt id: ``{document}`` marks where the document goes."""

    prompt_id: str
    user: str

    def user_message(self, document: str) -> str:
        # str.replace, not str.format: documents contain braces.
        return self.user.replace(DOCUMENT_SLOT, document)


def prompt_template(prompt_id: str, templates: dict[str, str] | None = None) -> PromptTemplate:
    """The template of ``prompt_id``: a custom one from the config, else A, B or C.

    A custom template that contains ``{document}`` is the whole user message; otherwise it
    is an instruction placed in the study's layout."""
    templates = templates or {}
    if prompt_id in templates:
        text = templates[prompt_id]
    elif prompt_id in INSTRUCTIONS:
        text = INSTRUCTIONS[prompt_id]
    else:
        known = sorted(set(INSTRUCTIONS) | set(templates))
        raise PromptError(f"prompt {prompt_id!r}: unknown prompt id; choose from {', '.join(known)} "
                          "or add it under generation.templates")
    if DOCUMENT_SLOT not in text:
        text = LAYOUT.replace("{instruction}", text)
    return PromptTemplate(prompt_id, text)


def resolve_layout(tokenizer, model_type: str, chat_family: str = "auto") -> str:
    """The layout for a model: an explicit family wins; ``auto`` uses the tokenizer's chat
    template when it has one, the OPT-IML layout for OPT, and plain text otherwise."""
    if chat_family == "auto":
        if getattr(tokenizer, "chat_template", None):
            return "chat"
        return "opt-iml" if model_type == "opt" else "none"
    if chat_family not in LAYOUTS:
        raise PromptError(f"chat_family {chat_family!r}: choose from auto, {', '.join(LAYOUTS)}")
    if chat_family == "chat" and not getattr(tokenizer, "chat_template", None):
        raise PromptError("chat_family 'chat': the tokenizer has no chat template")
    return chat_family


def render_ids(tokenizer, template: PromptTemplate, document: str, layout: str) -> list[int]:
    """Token ids of the full prompt for one document: one BOS at most, never two."""
    user = template.user_message(document)
    if layout == "chat":
        text = _apply_chat_template(tokenizer, user)
        return tokenizer(text, add_special_tokens=False, verbose=False).input_ids
    if layout == "llama":
        text = f"[INST] <<SYS>>\n{SYSTEM_MESSAGE}\n<</SYS>>\n\n{user} [/INST]"
    else:
        text = user
    return tokenizer(text, add_special_tokens=True, verbose=False).input_ids


def _apply_chat_template(tokenizer, user: str) -> str:
    messages = [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user}]
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - jinja raises plain exceptions
        # Some templates (Mistral, Gemma) reject a system role; prepend it to the user turn.
        if "system" not in str(exc).lower():
            raise
        merged = [{"role": "user", "content": f"{SYSTEM_MESSAGE}\n\n{user}"}]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
