"""A character-level tokenizer for the synthetic arithmetic task, built in code (no file needed).

It is a real `PreTrainedTokenizerFast`, so the rest of the harness treats it exactly like the
tokenizers of the real models (padding side, special tokens, batch encode/decode).
"""
from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
# Digits, the operators of every task variant, and the few characters of the prompt format.
CHARACTERS = list("0123456789+-*/%<>=#@&|^~?!:;,. ()[]abcdefghijklmnopqrstuvwxyz")


def build_arithmetic_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Every character is its own token; Fuse joins them back without separators on decode.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )
