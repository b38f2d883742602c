"""A byte-level tokenizer that needs no download: every UTF-8 byte is a token, plus BOS / EOS / PAD.

It is a real ``PreTrainedTokenizerFast`` (saved as ``tokenizer.json``), so the built-in model goes through the
same loading code as any Hub model, and any text (the synthetic task, the orca file, chat transcripts) encodes
without unknown tokens. Its chat template renders BOS itself, so rendered chats must be tokenized with
``add_special_tokens=False`` (no double BOS).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

# A minimal chat template in the usual shape: BOS, then one block per message closed by EOS.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable character map, in byte order (the ids are the byte values)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def build_byte_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    """The 259-token byte tokenizer: ids 0-255 are bytes, then ``<pad>``, ``<s>``, ``</s>``.

    Plain ``tokenizer(text)`` prepends BOS (as Llama's tokenizer does); EOS is never added automatically.
    """
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode())}
    for token in (PAD, BOS, EOS):
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([PAD, BOS, EOS])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE if chat_template else None,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
