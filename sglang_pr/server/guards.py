"""Requests SGLang 0.5.23 itself would crash on, refused as HTTP 400s on every route.

Two inputs pass SGLang's own checks yet take the scheduler down for every user of the server:

* ``top_k`` above SGLang's "whole vocabulary" value (``TOP_K_ALL`` = 2**30) overflows the
  sampler's int32 tensor;
* a token id outside ``[0, vocab)`` in ``input_ids`` indexes past the embedding table.

Both are checked where SGLang checks a request (``SamplingParams.verify``, the tokenizer
manager's per-request validation), so plain ``/generate``, the OpenAI routes and the plugin's
own routes all answer 400 with the field named. A ``ValueError`` there is SGLang's own path to a
400; ``ConfigError`` is one (``sglang_pr.validation``).
"""

from __future__ import annotations

from sglang_pr.validation import ConfigError


def check_top_k(top_k, field: str = "top_k") -> None:
    from sglang.srt.sampling.sampling_params import TOP_K_ALL

    if isinstance(top_k, int) and top_k > TOP_K_ALL:
        raise ConfigError(f"{field}: must be -1 or in [1, {TOP_K_ALL}], got {top_k}", field)


def check_token_ids(ids, vocab: int, field: str = "input_ids") -> None:
    bad = next((t for t in ids if not 0 <= t < vocab), None)
    if bad is not None:
        raise ConfigError(f"{field}: token id {bad} is outside the vocabulary [0, {vocab})", field)


def _after_sampling_verify(result, params, *args, **kwargs) -> None:
    check_top_k(params.top_k)


def _before_validate_request(manager, obj, input_ids, *args, **kwargs) -> None:
    if input_ids:  # a flat list of ids here (the tokenizer manager has tokenized the text)
        check_token_ids(input_ids, int(manager.model_config.vocab_size))
