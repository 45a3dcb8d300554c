"""Character-level tokenizer for the shipped model, in Hugging Face's fast-tokenizer format.

One token per printable ASCII character (plus newline), so any prompt can be encoded and every
token decodes to exactly one character (SGLang's incremental detokenizer relies on that being
stable). ``AutoTokenizer.from_pretrained(<model dir>)`` loads what ``save`` writes.

Ids: 0 <pad>, 1 <s> (BOS, prepended by the post-processor), 2 </s> (EOS), 3 <unk>,
then "\\n" = 4 and the printable characters " " .. "~" = 5 .. 99. Vocab size 100.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))
VOCAB_SIZE = len(SPECIALS) + len(CHARS)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)

# The chat template renders the last user message as a task prompt, so the OpenAI chat endpoint
# and /generate see the same tokens for the same question. Why it is written this way:
# - it starts with BOS because SGLang encodes the rendered chat text with add_special_tokens=False
#   (this tokenizer adds BOS itself, so SGLang avoids a double BOS), and the model needs BOS;
# - newlines are emitted as {{ '\n' }} expressions: a literal newline before a `{%-` tag would
#   be stripped by Jinja's whitespace control (the generation prompt would lose its newline);
# - a user message that already is a full prompt ("Q: ...\nA:\n") is not given a second "A:".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
    "{%- set c = m['content'] -%}"
    "{%- if c.endswith('\\nA:\\n') -%}{%- set c = c[:-3] -%}{%- endif -%}"
    "{%- if not c.startswith('Q: ') -%}{%- set c = 'Q: ' + c -%}{%- endif -%}"
    "{{ c }}{%- if not c.endswith('\\n') -%}{{ '\\n' }}{%- endif -%}"
    "{%- elif m['role'] == 'assistant' -%}{{ 'A:\\n' + m['content'] + '\\n' }}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{ 'A:\\n' }}{%- endif -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Every character is its own pre-token; [\s\S] so that the newline counts too.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save(path: str | Path) -> PreTrainedTokenizerFast:
    fast = build_tokenizer()
    fast.save_pretrained(str(path))
    return fast
