"""The built-in reward ``builtin:reverse``: the built-in task's true reward ``R(y)``
(``amapo.builtin.task.true_reward``).
"""

from __future__ import annotations

import re

from amapo.errors import UserError
from amapo.onpolicy.rewards.spec import FLAG, _check_shapes


def _last_user_text(prompt) -> str | None:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users and isinstance(users[-1], str) else None


class BuiltinReverseScorer:
    """The built-in task's true reward R(y) (``amapo.builtin.task``); a chat prompt uses its last user message."""

    _FORM = re.compile(r"reverse: \S+ =")

    def score(self, prompts: list, samples: list[list[str]]) -> list[list[float]]:
        from amapo.builtin.task import true_reward

        _check_shapes(prompts, samples)
        out = []
        for prompt, answers in zip(prompts, samples, strict=True):
            text = _last_user_text(prompt)
            if text is None or not self._FORM.fullmatch(text.strip()):
                shown = str(text if text is not None else prompt)[:60]
                raise UserError(
                    f"{FLAG['source']} builtin:reverse scores only the built-in task's prompts ('reverse: WORD ='), "
                    f"got {shown!r}: use a reward model for other prompts"
                )
            out.append([true_reward(text.strip(), answer) for answer in answers])
        return out

    def close(self) -> None:
        pass
