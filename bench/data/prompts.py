"""The prompt format: one explicit choice per task or experiment, the same for every model of a sweep.

- `plain`: the task's text as is ("Question: ...\\nAnswer:"), for every model.
- `chat`: the user turn (and `system_prompt`, if any) in the model's own chat template. A model
  whose tokenizer ships no template (Llama-3.2 base) is an error naming the model and the key,
  never a silent fall back to `plain`.
- `auto`: the chat template where the tokenizer has one, plain otherwise (the old default). It
  mixes two formats in one table (Qwen2.5 base ships ChatML, Llama-3.2 base nothing), so it is
  only used where a user asks for it.

`system_prompt: null` sends no system turn. Some templates then insert their own default one
(Qwen2.5: "You are a helpful assistant.", SmolLM2: "You are a helpful AI assistant named SmolLM,
...") — `prompt_record` finds it by rendering the template and records it as
`template_system_prompt`; `system_prompt: ""` replaces it with an empty system turn.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

PROMPT_FORMATS = ("plain", "chat", "auto")
# Markers no real text contains: where the template puts the system and user text.
_SYSTEM_MARK, _USER_MARK = "\x00SYSTEM\x00", "\x00USER\x00"


@dataclass(frozen=True)
class PromptFormat:
    format: str = "plain"            # plain | chat | auto
    system_prompt: str | None = None  # null: no system turn of ours

    def resolved(self, tokenizer) -> str:
        """`plain` or `chat`: what this format means for this tokenizer (`auto` decides here)."""
        has_template = getattr(tokenizer, "chat_template", None) is not None
        if self.format == "auto":
            return "chat" if has_template else "plain"
        if self.format == "chat" and not has_template:
            raise ValueError(
                f"task.prompt_format=chat, but the tokenizer of {tokenizer.name_or_path!r} ships no chat "
                "template (a base model); set task.prompt_format=plain for every model of the sweep, "
                "or task.prompt_format=auto to mix formats knowingly")
        if self.format not in PROMPT_FORMATS:
            raise ValueError(f"task.prompt_format={self.format!r}; allowed: {', '.join(PROMPT_FORMATS)}")
        return self.format


def messages(prompt: str, system_prompt: str | None) -> list[dict]:
    turns = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return turns + [{"role": "user", "content": prompt}]


def build_prompt(tokenizer, prompt: str, fmt: PromptFormat = PromptFormat()) -> str:
    """The text the model sees for one question (the task's prompt, few-shot exemplars included)."""
    if fmt.resolved(tokenizer) == "plain":
        if fmt.system_prompt:
            # Our choice: a plain prompt has no turns, so the system text goes first, on its own line.
            return f"{fmt.system_prompt}\n\n{prompt}"
        return prompt
    return tokenizer.apply_chat_template(messages(prompt, fmt.system_prompt), tokenize=False,
                                         add_generation_prompt=True)


def template_system_prompt(tokenizer) -> str | None:
    """The system text the chat template inserts when we send none (None if it inserts none).

    Found by rendering: the text between the template's system header and its user header, as
    they appear around a marker system prompt, read from a render without a system turn.
    """
    try:
        with_system = tokenizer.apply_chat_template(messages(_USER_MARK, _SYSTEM_MARK), tokenize=False)
        without = tokenizer.apply_chat_template(messages(_USER_MARK, None), tokenize=False)
    except Exception:  # a template that refuses a system turn cannot insert one either
        return None
    if _SYSTEM_MARK not in with_system:
        return None
    header, rest = with_system.split(_SYSTEM_MARK, 1)
    footer = rest.split(_USER_MARK, 1)[0]
    if not without.startswith(header) or footer not in without:
        return None
    return without[len(header):without.index(footer, len(header))]


def prompt_record(task, tokenizer) -> dict:
    """What result.json should state about the prompts of a run: the format asked for and used,
    the system text the model really saw, and the few-shot exemplars."""
    fmt = task.prompt_format
    used = fmt.resolved(tokenizer)
    inserted = template_system_prompt(tokenizer) if used == "chat" and fmt.system_prompt is None else None
    if inserted is not None:
        log.warning("task.system_prompt is null, but the chat template of %r inserts its own: %r "
                    "(recorded as template_system_prompt; system_prompt='' replaces it with an empty one)",
                    tokenizer.name_or_path, inserted)
    return {"prompt_format": fmt.format, "prompt_format_used": used, "system_prompt": fmt.system_prompt,
            "template_system_prompt": inserted, "num_fewshot": getattr(task, "num_fewshot", 0),
            "fewshot_seed": getattr(task, "fewshot_seed", None),
            "fewshot_ids": list(getattr(task, "fewshot_ids", []))}
