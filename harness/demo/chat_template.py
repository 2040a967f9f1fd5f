"""Qwen3-style chat template shared by tiny-chat and tiny-think.

Message content is emitted verbatim (no ``trim``): stabprobe perturbs whitespace, so a
leading space or trailing newline in a prompt must reach the model as distinct tokens.
The ``-`` markers below only strip whitespace of the template source itself.
"""

from __future__ import annotations

THINK_OFF_SUFFIX = "<think>\n\n</think>\n\n"

CHAT_TEMPLATE: str = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    # Same rule as Qwen3: only an explicit enable_thinking=False pre-fills an empty think block.
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)
