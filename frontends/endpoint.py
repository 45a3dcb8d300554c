"""A RuntimeEndpoint whose generations carry DeepConf tracking (per-trace confidences)."""

from __future__ import annotations

from typing import Union

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

from sglang_pr.deepconf.config import CUSTOM_PARAMS_KEY, TraceSettings, parse_trace_settings


class DeepConfRuntimeEndpoint(RuntimeEndpoint):
    """``RuntimeEndpoint`` + ``custom_params["deepconf"]`` on every request it sends.

    ``deepconf``: TraceSettings (or a dict of them): ``k``, ``window`` and an optional
    ``threshold`` — with a threshold every ``gen`` of the program stops early, server-side, the
    step its window confidence drops below it (finish reason ``low_confidence``).
    Each ``gen``'s meta info then has ``deepconf`` (lowest group, bottom-10 %, tail, mean) and
    ``deepconf_confidences`` (one per token), which :func:`sglang_pr.frontends.vote` uses.
    """

    def __init__(self, base_url: str, deepconf: Union[TraceSettings, dict, None] = None,
                 **kwargs):
        super().__init__(base_url, **kwargs)
        self.deepconf = parse_trace_settings(deepconf if deepconf is not None else {})

    def _add_images(self, s, data: dict) -> None:
        # The one per-request hook RuntimeEndpoint calls with the request body, on both
        # generate paths (plain and streaming) and the select path; it is where a backend
        # subclass can add request fields, so the DeepConf settings go in here.
        super()._add_images(s, data)
        sp = data.setdefault("sampling_params", {})
        custom = dict(sp.get("custom_params") or {})
        custom[CUSTOM_PARAMS_KEY] = self.deepconf.to_custom_params()
        sp["custom_params"] = custom

