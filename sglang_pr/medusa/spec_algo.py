"""MEDUSA as a SGLang ``CustomSpecAlgo``: server-arg resolution and the worker factory.

``handle_server_args`` runs in the main process while SGLang resolves its arguments, so a bad
heads directory (wrong hidden size or vocab, missing tensors, bad tree) stops the launch there,
with a message naming the file, before anything is served. It then pins what SGLang must size
and schedule for a tree verify:

    speculative_num_draft_tokens = tree nodes n (KV reserved per decode step is 2n)
    speculative_num_steps        = tree depth, speculative_eagle_topk = 1
    disable_overlap_schedule     = True (the worker runs on the synchronous V2 schema)
    CUDA graphs                  off (decode and prefill)
    attention backend            torch_native -> medusa_tree (same, plus a tree-masked verify)
"""

from __future__ import annotations

import logging

from sglang.srt.speculative.spec_registry import CustomSpecAlgo

from sglang_pr.medusa.checkpoint import MedusaHeadsError, check_heads
from sglang_pr.medusa.config import BACKEND_NAME, MedusaSettingsError, resolve_medusa_config
from sglang_pr.medusa.tree import MedusaTree

logger = logging.getLogger(__name__)

_BACKEND_FIELDS = ("attention_backend", "prefill_attention_backend", "decode_attention_backend")


def base_model_dims(model_path: str, trust_remote_code: bool = False) -> tuple[int, int]:
    """(hidden_size, vocab_size) of the base model, from its config only."""
    from sglang.srt.utils.hf_transformers_utils import get_config

    cfg = get_config(model_path, trust_remote_code=trust_remote_code)
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(text.hidden_size), int(text.vocab_size)


def _disable_graphs(server_args) -> None:
    """No CUDA graphs: the tree verify runs eagerly (its mask and KV moves are per step).

    SGLang resolves ``cuda_graph_config`` before the speculative hook runs, so the legacy
    ``disable_cuda_graph`` flag alone would come too late; the config is replaced (declared)
    with both phases disabled.
    """
    from sglang.srt.model_executor.cuda_graph_config import (
        Backend,
        CudaGraphConfig,
        Phase,
        with_phase,
    )

    server_args.disable_cuda_graph = True
    cg = getattr(server_args, "cuda_graph_config", None)
    if isinstance(cg, CudaGraphConfig):
        for phase in (Phase.DECODE, Phase.PREFILL):
            cg = with_phase(cg, phase, backend=Backend.DISABLED)
        server_args.cuda_graph_config = cg


class MedusaSpecAlgo(CustomSpecAlgo):
    def __repr__(self) -> str:
        return "MedusaSpecAlgo('MEDUSA')"

    def has_draft_kv(self) -> bool:
        return False  # the tree lives only in the verify forward; no draft KV chains

    # SGLang's scheduler calls these on every algorithm, but CustomSpecAlgo (0.5.23) does not
    # define them (its conformance check only covers is_*/supports_*); same answers as NGRAM.
    def carries_draft_hidden_states(self) -> bool:
        return False

    def need_topk(self) -> bool:
        return False

    def create_future_map(self, device, req_to_token_pool, needs_cpu_seq_lens=True,
                          needs_confidence_relay=False):
        from sglang.srt.managers.overlap_utils import FutureMap

        return FutureMap(device, self, req_to_token_pool, needs_cpu_seq_lens,
                         needs_confidence_relay)

    def handle_server_args(self, server_args) -> None:
        path = server_args.speculative_draft_model_path
        try:
            config = resolve_medusa_config(path, server_args.speculative_num_draft_tokens)
            hidden, vocab = base_model_dims(
                server_args.model_path, bool(server_args.trust_remote_code)
            )
            num_heads, _, _ = check_heads(path, hidden_size=hidden, vocab_size=vocab)
        except (MedusaHeadsError, MedusaSettingsError) as e:
            raise ValueError(f"--speculative-algorithm MEDUSA: {e}") from None
        tree = MedusaTree.from_paths(config.effective_tree, config.top_k)
        if tree.max_depth > num_heads:
            raise ValueError(
                f"--speculative-algorithm MEDUSA: the tree is {tree.max_depth} deep but "
                f"{path} has only {num_heads} heads"
            )
        server_args.speculative_num_draft_tokens = tree.num_nodes
        server_args.speculative_num_steps = tree.max_depth
        server_args.speculative_eagle_topk = 1
        server_args.disable_overlap_schedule = True
        _disable_graphs(server_args)
        for field in _BACKEND_FIELDS:
            if getattr(server_args, field, None) == "torch_native":
                setattr(server_args, field, BACKEND_NAME)
        logger.info(
            "MEDUSA: tree of %d nodes, depth %d; attention %s",
            tree.num_nodes, tree.max_depth, server_args.attention_backend,
        )


def worker_factory(server_args):
    from sglang_pr.medusa.worker import MedusaWorker

    return MedusaWorker
