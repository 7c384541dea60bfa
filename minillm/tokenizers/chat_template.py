"""Chat templates: a conversation (a list of {"role", "content"} messages) -> the prompt text the
model was fine-tuned on, rendered from the model's own Jinja template as Hugging Face renders it.

An instruct model learned one exact layout of turns (ChatML for SmolLM2:
``<|im_start|>user\\n...<|im_end|>\\n``); the layout ships with the model as a Jinja template
(GGUF metadata ``tokenizer.chat_template``, HF ``tokenizer_config.json``). Rendering it as
transformers' ``apply_chat_template`` does means: jinja2 with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, the variables ``messages``,
``add_generation_prompt``, ``bos_token``, ``eos_token`` (and any other special token passed in),
the function ``raise_exception(message)``, ``strftime_now(format)`` and the ``tojson`` filter
without HTML escaping. The template comes from a downloaded file, so it is untrusted: it runs in
jinja2's ImmutableSandboxedEnvironment, which refuses attribute access to Python internals and
mutation of the values it is given. (HF's ``{% generation %}`` tag, used only to mark the
assistant's tokens for training masks, is not supported.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from minillm.errors import TokenizerError


class _TemplateRaised(Exception):
    """raise_exception(...) called by the template itself."""


def _raise_exception(message):
    raise _TemplateRaised(str(message))


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # HF's tojson: plain json.dumps, no HTML escaping (jinja2's own filter escapes < > &)
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template. ``special`` holds the special-token strings the template may
    use (``bos_token``, ``eos_token``, ...)."""

    def __init__(self, source: str, **special: str):
        try:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise TokenizerError("chat templates need the jinja2 package "
                                 "(pip install jinja2).") from None
        if not isinstance(source, str) or not source.strip():
            raise TokenizerError("the chat template is empty.")
        self.source = source
        self.special = {k: v for k, v in special.items() if v is not None}
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise TokenizerError(f"the chat template is not valid Jinja ({e}).") from None
        self._jinja_error = jinja2.TemplateError

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False,
               **variables) -> str:
        """The prompt text for ``messages``; ``add_generation_prompt`` appends the opening of
        the assistant's turn, so that the model's next tokens are its reply."""
        messages = _check_messages(messages)
        context = {**self.special, **variables}
        try:
            return self._template.render(messages=messages,
                                         add_generation_prompt=add_generation_prompt, **context)
        except _TemplateRaised as e:
            raise TokenizerError(f"the chat template refused these messages: {e}") from None
        except self._jinja_error as e:  # includes the sandbox's SecurityError
            raise TokenizerError(f"the chat template failed to render ({e}).") from None


def _check_messages(messages):
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TokenizerError("messages must be a list of {'role': ..., 'content': ...} dicts.")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(
                m.get("content"), str):
            raise TokenizerError(f"message {i} must be a dict with a string 'role' and a "
                                 "string 'content'.")
        out.append(dict(m))
    return out


def render_chat(source: str, messages, add_generation_prompt: bool = False, **special) -> str:
    """One-shot ``ChatTemplate(source, **special).render(messages, add_generation_prompt)``."""
    return ChatTemplate(source, **special).render(messages, add_generation_prompt)
