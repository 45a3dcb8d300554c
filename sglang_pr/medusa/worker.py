"""MEDUSA's speculative worker, driven by SGLang's scheduler on its V2 (synchronous) schema.

One decode step for a batch of requests (all tensors request-major):

1. draft   : tree tokens [bs, n] = root (each request's last token, not yet in KV) + the heads'
             top-k candidates (computed last step on the last accepted hidden state);
2. verify  : ONE forward of the base model over bs * n tokens in TARGET_VERIFY mode, with a
             tree mask (node sees the prefix and its ancestors), positions prefix + depth; KV of
             all n nodes lands in the request's reserved slots seq_len .. seq_len + n - 1;
3. accept  : greedy (top_k == 1 requests: longest path equal to the base argmax) or typical
             (sampling requests); the bonus token comes from the base distribution at the last
             accepted node;
4. commit  : accepted nodes' KV is moved to the front of the window (slots seq_len ..
             seq_len + m); the rest of the window stays reserved-but-uncommitted and is
             overwritten next step or freed by SGLang with the request (its V2 reserve scheme);
5. redraft : heads on the hidden state of the last accepted node -> next step's candidates
             (heads that read tokens also get the bonus token, the next tree's root).

Prefill (extend) runs the plain target forward, samples the first token there and runs the heads
on the last prompt position's hidden state (and that first token, the root).
"""

from __future__ import annotations

import logging
import torch
from sglang.srt.layers.logprob_processor import compute_spec_logprobs
from sglang.srt.managers.schedule_batch import ScheduleBatch
from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardMode
from sglang.srt.runtime_context import get_spec
from sglang.srt.speculative.base_spec_worker import BaseSpecWorker

from sglang_pr.deepconf import speculative as confidence_bridge
from sglang_pr.medusa.checkpoint import load_heads
from sglang_pr.medusa.config import resolve_medusa_config
from sglang_pr.medusa.spec_input import MedusaSpecInput
from sglang_pr.medusa.tree import MedusaTree
from sglang_pr.medusa.verify import VerifyResult, verify_tree

logger = logging.getLogger(__name__)


class MedusaWorker(BaseSpecWorker):
    def __init__(self, server_args, gpu_id: int, nccl_port: int, target_worker):
        super().__init__()
        self.server_args = server_args
        self._target_worker = target_worker
        self._draft_worker = None
        self.model_runner = target_worker.model_runner
        self.device = self.model_runner.device
        spec = get_spec()
        self.config = resolve_medusa_config(
            spec.speculative_draft_model_path, spec.speculative_num_draft_tokens
        )
        self.heads = self._load_heads(spec.speculative_draft_model_path)
        self.tree = MedusaTree.from_paths(
            self.config.effective_tree, self.config.top_k, device=self.device
        )
        if self.tree.max_depth > self.heads.num_heads:
            raise ValueError(
                f"MEDUSA tree is {self.tree.max_depth} deep but the heads file has "
                f"{self.heads.num_heads} heads"
            )
        self.draft_token_num = self.speculative_num_draft_tokens = self.tree.num_nodes
        self.speculative_num_steps, self.topk = self.tree.max_depth, 1
        self.page_size = 1
        self.on_gpu = torch.device(self.device).type != "cpu"
        logger.info(
            "MEDUSA: %d heads from %s, tree of %d nodes (depth %d), top-k %d",
            self.heads.num_heads, spec.speculative_draft_model_path, self.tree.num_nodes,
            self.tree.max_depth, self.config.top_k,
        )

    def _load_heads(self, path: str):
        mc = self.model_runner.model_config
        model = self.model_runner.model
        lm_head = getattr(getattr(model, "lm_head", None), "weight", None)
        self.lm_head_weight = lm_head  # DeepConf's first-token confidence (confidence_bridge)
        get_embed = getattr(model, "get_input_embeddings", None)
        embedding = getattr(get_embed() if get_embed else None, "weight", None)
        heads = load_heads(
            path,
            hidden_size=mc.hidden_size,
            vocab_size=mc.vocab_size,
            base_lm_head=lm_head,
            base_embedding=embedding,
            device=self.device,
            dtype=self.model_runner.dtype,
        )
        return heads.fuse()

    @property
    def draft_worker(self):
        return None  # no draft model: the heads live in this worker

    def alloc_memory_pool(self, **kwargs):
        # The target pools exist only after the scheduler allocated them.
        self.req_to_token_pool, self.token_to_kv_pool_allocator = (
            self._target_worker.get_memory_pool()
        )

    def clear_cache_pool(self):
        pass

    def init_attention_backends(self):
        """Refuse to serve with an attention path that would ignore the tree mask."""
        from sglang_pr.medusa.attention import MedusaTreeAttnBackend

        backend = self.model_runner.attn_backend
        if not self.on_gpu and not isinstance(backend, MedusaTreeAttnBackend):
            raise RuntimeError(
                f"MEDUSA on CPU needs --attention-backend medusa_tree (got "
                f"{type(backend).__name__}, which would verify the tree causally)"
            )

    # -- one scheduler step ----------------------------------------------------------------

    def forward_batch_generation(
        self, batch: ScheduleBatch, on_publish=None, pp_proxy_tensors=None
    ) -> GenerationBatchResult:
        if batch.forward_mode.is_decode():
            result = self._decode_step(batch)
        else:
            result = self._extend_step(batch)
        if on_publish is not None:
            on_publish(result.new_seq_lens)
        return result

    def _extend_step(self, batch: ScheduleBatch) -> GenerationBatchResult:
        res = self.target_worker.forward_batch_generation(
            batch, capture_hidden_mode=CaptureHiddenMode.LAST
        )
        hidden = res.logits_output.hidden_states  # [bs, H]: last prompt position per request
        confidence_bridge.publish_extend(batch, hidden, self.lm_head_weight)
        # root: the token just sampled after the prompt, the next tree's root
        head_topk = self.heads.topk(hidden.to(self.heads_dtype), self.config.top_k,
                                    res.next_token_ids.long())
        res.next_draft_input = MedusaSpecInput.carry(head_topk, self.draft_token_num)
        res.new_seq_lens = batch.seq_lens
        res.speculative_num_draft_tokens = self.draft_token_num
        return res

    @property
    def heads_dtype(self) -> torch.dtype:
        return next(self.heads.parameters()).dtype

    def _prepare_verify(self, batch: ScheduleBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn the decode batch into a TARGET_VERIFY batch over the tree.

        Returns tokens [bs, n] and the KV slots of the verify window out_cache_loc [bs, n]
        (req_to_token[row, seq_len .. seq_len + n - 1]: reserved by SGLang's decode prep).
        """
        n = self.tree.num_nodes
        root = torch.tensor(
            [req.output_ids[-1] for req in batch.reqs], dtype=torch.long, device=self.device
        )
        head_topk = batch.spec_info.head_topk[:, : self.tree.max_depth]
        tokens = self.tree.tree_tokens(root, head_topk)  # [bs, n]
        window = batch.seq_lens.view(-1, 1).long() + torch.arange(n, device=self.device)
        req_to_token = self.req_to_token_pool.req_to_token
        out_cache_loc = req_to_token[batch.req_pool_indices.long().view(-1, 1), window]
        verify_input = MedusaSpecInput(
            draft_token_num=n,
            draft_token=tokens.flatten(),
            positions=self.tree.positions(batch.seq_lens),
            tree_mask=self.tree.mask,
        )
        if self.on_gpu:  # FlashInfer/Triton read NGRAM's flat prefix+tree mask
            verify_input.custom_mask = verify_input.build_gpu_custom_mask(
                batch.seq_lens_cpu.tolist()
            )
        batch.forward_mode = ForwardMode.TARGET_VERIFY
        batch.input_ids = tokens.flatten()
        batch.out_cache_loc = out_cache_loc.flatten().to(torch.int64)
        batch.spec_info = verify_input
        return tokens, out_cache_loc

    def _decode_step(self, batch: ScheduleBatch) -> GenerationBatchResult:
        bs, n = len(batch.reqs), self.tree.num_nodes
        seq_lens = batch.seq_lens
        tokens, out_cache_loc = self._prepare_verify(batch)
        res = self.target_worker.forward_batch_generation(batch, is_verify=True)
        out = res.logits_output
        logits = out.next_token_logits.view(bs, n, -1)
        vr = verify_tree(self.tree, tokens, logits, batch.sampling_info, self.config,
                         seq_lens=seq_lens)
        self._commit_kv(out_cache_loc, vr)
        rows = torch.arange(bs, device=self.device)
        last_hidden = out.hidden_states.view(bs, n, -1)[rows, vr.last_node]  # [bs, H]
        bonus = vr.accept_tokens[rows, vr.num_drafts]  # [bs]: the next tree's root
        next_topk = self.heads.topk(last_hidden.to(self.heads_dtype), self.config.top_k, bonus)
        if batch.return_logprob:
            compute_spec_logprobs(batch, out, vr.predict_flat, accept_index=vr.accept_index_flat)
        confidence_bridge.publish_verify(batch, logits, vr)
        batch.forward_mode = ForwardMode.DECODE
        accept_lens = (vr.num_drafts + 1).to(torch.int32)
        return GenerationBatchResult(
            logits_output=out,
            next_token_ids=vr.accept_tokens.flatten(),
            can_run_cuda_graph=False,
            accept_lens=accept_lens,
            new_seq_lens=seq_lens + accept_lens,
            next_draft_input=MedusaSpecInput.carry(next_topk, n),
            speculative_num_draft_tokens=n,
            speculative_output_stride=self.tree.max_depth + 1,
        )

    def _commit_kv(self, out_cache_loc: torch.Tensor, vr: VerifyResult) -> None:
        """Move accepted nodes' KV to the front of each request's window.

        out_cache_loc [bs, n]: the window's slots; vr.accept_nodes [bs, D+1] node ids (-1 pad).
        Node j-th accepted (j >= 1) moves from slot window[node] to slot window[j]; the root is
        node 0 and already sits at window[0].
        """
        nodes = vr.accept_nodes
        j = torch.arange(nodes.shape[1], device=nodes.device).view(1, -1).expand_as(nodes)
        moved = (nodes > 0) & (nodes != j)
        if not bool(moved.any()):
            return
        src = out_cache_loc.gather(1, nodes.clamp(min=0))[moved]
        tgt = out_cache_loc.gather(1, j)[moved]
        # SGLang's own move (native indexing on CPU, see cpu_compat; a Triton copy on GPU).
        self.token_to_kv_pool_allocator.get_kvcache().move_kv_cache(tgt, src)
