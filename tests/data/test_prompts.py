"""sglang_pr/data/prompts.py: chat template applied when the model has one, else the text as is."""

from sglang_pr.data.prompts import format_prompt, format_prompts
from sglang_pr.model import SHIPPED_MODEL_DIR


class _ChatTokenizer:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "<user>" + messages[0]["content"] + "</user><assistant>"


class _PlainTokenizer:
    chat_template = None


def test_chat_template_wraps_the_question_as_one_user_turn():
    assert format_prompt(_ChatTokenizer(), "2+2?") == "<user>2+2?</user><assistant>"


def test_no_chat_template_returns_the_question_unchanged():
    assert format_prompt(_PlainTokenizer(), "Q: 17 a*6") == "Q: 17 a*6"


def test_shipped_model_template_gives_the_task_prompt_format():
    # The shipped model's chat template turns a bare question into its task prompt, so every
    # command can format questions the same way for either model.
    assert format_prompts(SHIPPED_MODEL_DIR, ["Q: 1 a+2", "3 a*4"]) == [
        "<s>Q: 1 a+2\nA:\n", "<s>Q: 3 a*4\nA:\n"]
