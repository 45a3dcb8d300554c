"""SGLang frontend-language additions (installed as ``sglang_pr.frontends``).

DeepConf in SGLang programs::

    import sglang as sgl
    from sglang_pr.deepconf.config import SAMPLING  # T 0.6, top-p 0.95, 160 new tokens
    from sglang_pr.frontends import DeepConfRuntimeEndpoint, deepconf_group, vote

    @sgl.function
    def solve(s, question):
        s += question
        forks = s.fork(8)
        forks += sgl.gen("answer", max_tokens=SAMPLING.max_new_tokens,
                         temperature=SAMPLING.temperature, top_p=SAMPLING.top_p)
        s += vote(forks, "answer", method="deepconf_low")     # offline filter + weighted vote

    @sgl.function
    def solve_online(s, question):
        s += question
        s += deepconf_group(s, "answer", budget=32, method="deepconf_low",
                            sampling_params=SAMPLING.as_params())

    sgl.set_default_backend(DeepConfRuntimeEndpoint("http://127.0.0.1:30000"))

``vote`` with a DeepConf method needs per-trace confidences, which
:class:`DeepConfRuntimeEndpoint` asks the server for on every ``gen``; ``method="sc"`` (plain
majority, the default) works with any backend. ``deepconf_group`` runs the online
algorithm in the server (warm-up, threshold, early stops, consensus stop) in one call.
"""

from sglang_pr.frontends.endpoint import DeepConfRuntimeEndpoint
from sglang_pr.frontends.group import deepconf_group
from sglang_pr.frontends.vote import VoteExpr, vote

__all__ = ["DeepConfRuntimeEndpoint", "VoteExpr", "deepconf_group", "vote"]
