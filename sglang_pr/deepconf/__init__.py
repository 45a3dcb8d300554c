"""DeepConf: confidence-filtered, early-stopped self-consistency inside SGLang (issue 4).

Layout (pure parts first, SGLang-facing parts last):

* ``config``      — DeepConfConfig (a group) and TraceSettings (one request); η = % kept.
* ``confidence``  — token confidence C = −mean top-k log-prob (natural log), batched torch.
* ``tracker``     — the online sliding-window tracker (full-window rule) — stable API.
* ``summary``     — lowest group / bottom-10 % / tail / mean; percentile threshold.
* ``vote``, ``extract``, ``offline`` — votes, filters, answer extraction, offline Python API.
* ``group``       — fork-group orchestration (warm-up, threshold, early stops, consensus).
* ``observer``, ``scheduler_hooks``, ``runtime_state`` — in the scheduler: confidence per
  decode step and the ``low_confidence`` finish that frees KV the step it is decided.
* ``tokenizer_hooks``, ``server_backend``, ``routes``, ``openai_hooks`` — in the main process:
  validation (400 naming the field), per-trace summaries, ``POST /sglang_pr/deepconf/group``,
  OpenAI ``extra_body={"deepconf": {...}}``.
* ``seeded_sampling`` — opt-in per-request seeds on CPU servers (reproducibility tests).
* ``demo``        — SC vs DeepConf-low side by side (for ``sglang-pr demo``).

Per request, in any SGLang request: ``sampling_params.custom_params = {"deepconf": {"k": 20,
"window": 2048, "threshold": s}}``; the response's ``meta_info`` then has
``deepconf_confidences`` (per token) and ``deepconf`` (the summaries), and a trace stopped early
finishes with ``{"type": "low_confidence", "confidence": c, "threshold": s, ...}``.

Speculative decoders feed accepted tokens' confidences through
``runtime_state.push_token_confidences(req, confs)`` (see that module).
"""
