"""The char-level tokenizer: ids, round trips, save/load and the chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from sglang_pr.model import task, tokenizer
from sglang_pr.model.task import Problem


@pytest.fixture(scope="module")
def tok():
    return tokenizer.build_tokenizer()


def test_special_and_fixed_ids(tok):
    assert tokenizer.VOCAB_SIZE == 100 == len(tok)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.eos_token == "</s>" and tok.bos_token == "<s>"
    assert tok.convert_tokens_to_ids(["\n", " ", "0", "~"]) == [4, 5, 5 + ord("0") - 32, 99]


def test_encode_prepends_bos_and_is_one_token_per_char(tok):
    text = "Q: 17 a*6 b+9\nA:\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == tokenizer.BOS_ID and len(ids) == len(text) + 1
    assert ids[-1] == tok.convert_tokens_to_ids("\n") == 4
    assert tok(text, add_special_tokens=False)["input_ids"] == ids[1:]


def test_round_trip(tok):
    for p in task.heldout_set(30):
        text = p.prompt + p.completion
        ids = tok(text)["input_ids"] + [tokenizer.EOS_ID]
        assert tok.decode(ids, skip_special_tokens=True) == text
        # Each token decodes to exactly one character (incremental detokenization relies on it).
        assert [tok.decode([i]) for i in ids[1:-1]] == list(text)


def test_every_printable_char_is_known(tok):
    ids = tok(tokenizer.CHARS, add_special_tokens=False)["input_ids"]
    assert tokenizer.UNK_ID not in ids and len(ids) == len(tokenizer.CHARS)


def test_save_and_autotokenizer_load(tmp_path, tok):
    tokenizer.save(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    text = Problem(17, (("*", 6), ("+", 9))).prompt
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.chat_template == tokenizer.CHAT_TEMPLATE


@pytest.mark.parametrize("content", ["17 a*6 b+9", "Q: 17 a*6 b+9", "Q: 17 a*6 b+9\n", "Q: 17 a*6 b+9\nA:\n"])
def test_chat_template_renders_the_task_prompt(tok, content):
    prompt = Problem(17, (("*", 6), ("+", 9))).prompt
    msgs = [{"role": "user", "content": content}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<s>" + prompt
    # SGLang's chat route encodes the rendered text without adding specials: BOS exactly once,
    # and the same ids /generate gets for the raw prompt.
    assert tok(text, add_special_tokens=False)["input_ids"] == tok(prompt)["input_ids"]
    ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert list(ids) == tok(prompt)["input_ids"]


def test_chat_template_renders_assistant_turns(tok):
    p = Problem(1, (("+", 2), ("+", 3)))
    msgs = [{"role": "user", "content": "1 a+2 b+3"}, {"role": "assistant", "content": p.completion}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<s>" + p.prompt + p.completion + "\n"
