"""A reward model read as a classifier: ``_ClassifierRunner`` (texts in, one value per text out), which the
pairwise scorer shares, and the pointwise scorer.

Pointwise (``mode="pointwise"``): an ``AutoModelForSequenceClassification`` reads the conversation
``prompt messages + {"role": "assistant", "content": answer}`` rendered by the REWARD tokenizer's chat template
(or ``spec.chat_template``), as SimPO's ``on_policy_data_gen/reward_model_annotate.py`` does; a string prompt is
one user message. The value is ``logits[:, i]`` (``i = reward_index``, 0 for a one-output model) or
``output.score`` for ``reward_index="score"``.

Tokens. The chat template writes BOS itself, so a rendered text is tokenized with ``add_special_tokens=False``
(what ``apply_chat_template(tokenize=True)``, hence SimPO's script, does), and a doubled BOS at the start is cut
to one, as ``amapo.data.tokenization`` does. Texts are cut to ``max_length`` tokens keeping the start
(``truncated_rows`` counts them), sorted by length and batched ``batch_size`` at a time with right padding.
Padding: the tokenizer's pad token, or EOS where it has none (as TRL; ``load_tokenizer``), set as the model's
``config.pad_token_id`` so the classifier reads the last real token. One exception keeps a padded row's score equal
to its unpadded score: when that id occurs inside a row of the batch (Llama-3's EOS ``<|eot_id|>`` closes every
turn) another id the batch does not use pads it (the config's pad id, else the lowest unused id); transformers'
classifiers pool at the last non-pad token (so a row ending in EOS would be read one token early) and ArmoRM pools
before the FIRST pad (so an EOS inside would cut the row). Padded positions come after every real token, so under
causal attention their id never reaches a real token's hidden state.
"""

from __future__ import annotations

import gc
import logging
import math

from amapo.errors import UserError
from amapo.onpolicy.rewards.spec import FLAG, SCORE, RewardSpec, _check_shapes

logger = logging.getLogger(__name__)


def _messages(prompt) -> list[dict]:
    """A prompt as chat messages: a string is one user message."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


class _ClassifierRunner:
    """Texts in, one value per text out: tokenize, cut, sort, pad, forward, read the output (module docstring)."""

    def __init__(self, model, tokenizer, index: int | str, spec: RewardSpec, device: str):
        self.model, self.tokenizer, self.index, self.device = model, tokenizer, index, device
        self.source, self.batch_size, self.max_length = spec.source, spec.batch_size, spec.max_length
        self.config_pad_id = model.config.get_text_config().pad_token_id  # before _forward overwrites it
        self.truncated_rows = 0

    def encode(self, text: str, *, rendered: bool) -> list[int]:
        """Token ids of one text: a rendered chat holds its BOS already (no second one); plain text gets the
        tokenizer's special tokens. Cut to ``max_length`` keeping the start."""
        ids = list(self.tokenizer(text, add_special_tokens=not rendered, verbose=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        while bos is not None and ids[:2] == [bos, bos]:
            ids = ids[1:]
        if len(ids) > self.max_length:
            self.truncated_rows += 1
            ids = ids[: self.max_length]
        return ids

    def values(self, rows: list[list[int]]) -> list[float]:
        """One value per row of token ids, in the rows' order; longest first so memory fails on the first batch."""
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        values: list[float] = [0.0] * len(rows)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, value in zip(batch, self._forward([rows[i] for i in batch]), strict=True):
                values[i] = value
        return values

    def _forward(self, rows: list[list[int]]) -> list[float]:
        import torch

        pad = self.pad_id(rows)
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        self.model.config.pad_token_id = pad  # the classifier reads the last token before its padding
        self.model.config.get_text_config().pad_token_id = pad
        with torch.no_grad():
            output = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        return self._read(output, len(rows)).float().cpu().tolist()

    def pad_id(self, rows: list[list[int]]) -> int:
        """The tokenizer's pad (EOS if it has none: ``load_tokenizer``), unless a row holds it: then the config's pad
        id, else the lowest id that no row holds (module docstring)."""
        used = {token for row in rows for token in row}
        vocab = self.model.get_input_embeddings().num_embeddings
        for candidate in (self.tokenizer.pad_token_id, self.config_pad_id, *range(vocab)):
            if candidate is not None and 0 <= candidate < vocab and candidate not in used:
                return candidate
        raise RuntimeError(f"every one of the {vocab} token ids occurs in the batch: no id left to pad with")

    def _read(self, output, batch: int):
        """The value per row: ``output.score`` for SCORE, else ``logits[:, index]`` (1-D logits: one output)."""
        if self.index == SCORE:
            values = getattr(output, "score", None)
            if values is None:
                fields = ", ".join(output) if hasattr(output, "keys") else type(output).__name__
                raise UserError(
                    f"{FLAG['reward_index']} score: reward model {self.source} returns no .score (its output has "
                    f"{fields}): use {FLAG['reward_index']} 0..N-1"
                )
        else:
            logits = output.logits
            values = logits if logits.dim() == 1 and self.index == 0 else logits[:, self.index]
        values = values.reshape(batch, -1)
        if values.shape[1] != 1:
            raise UserError(f"reward model {self.source}: its .score has {values.shape[1]} values per text, not one")
        return values[:, 0]

    def close(self) -> None:
        """Drop the model (twice is harmless) and give its GPU memory back."""
        import torch

        if self.model is None:
            return
        on_gpu = next(self.model.parameters()).is_cuda
        self.model = None
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()

    def warn_truncated(self, before: int) -> None:
        if self.truncated_rows > before:
            logger.warning("reward model %s: %d texts cut to %s %d tokens (their ends unread)", self.source,
                           self.truncated_rows - before, FLAG["max_length"], self.max_length)  # fmt: skip


def _render(tokenizer, messages: list[dict], template: str | None, prompt) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    except TemplateError as err:
        shown = str(prompt)[:60]
        raise UserError(f"the reward chat template failed on prompt {shown!r}: {err}: pass a template that fits "
                        f"the reward model ({FLAG['chat_template']})") from None  # fmt: skip


def _check_finite(scores: list[list[float]], prompts: list, source: str) -> list[list[float]]:
    for prompt, row in zip(prompts, scores, strict=True):
        if not all(math.isfinite(v) for v in row):
            raise UserError(f"reward model {source} gave a non-finite score {row} for prompt {str(prompt)[:60]!r}")
    return scores


class PointwiseScorer:
    """One value per (prompt, answer): the reward model reads prompt + answer as a chat (module docstring)."""

    def __init__(self, runner: _ClassifierRunner, chat_template: str | None):
        self.runner, self.chat_template = runner, chat_template

    @property
    def truncated_rows(self) -> int:
        return self.runner.truncated_rows

    def score(self, prompts: list, samples: list[list[str]]) -> list[list[float]]:
        _check_shapes(prompts, samples)
        truncated, rows, sizes = self.runner.truncated_rows, [], []
        for prompt, answers in zip(prompts, samples, strict=True):
            sizes.append(len(answers))
            for answer in answers:
                messages = [*_messages(prompt), {"role": "assistant", "content": answer}]
                text = _render(self.runner.tokenizer, messages, self.chat_template, prompt)
                rows.append(self.runner.encode(text, rendered=True))
        values = iter(self.runner.values(rows))
        self.runner.warn_truncated(truncated)
        return _check_finite([[next(values) for _ in range(n)] for n in sizes], prompts, self.runner.source)

    def close(self) -> None:
        self.runner.close()
