"""The server side shared by every subsystem: SGLang's KV accounting over HTTP, the info
route, and a launcher for SGLang server processes.

* ``kv_accounting`` SGLang's own KV numbers in ``/server_info`` (hook below) and the client
                    helpers tests and benchmarks use to assert "no leak";
* ``routes``        ``GET /sglang_pr/info`` and the installation of every subsystem's routes;
* ``launcher``      start/stop SGLang servers (tests, benchmarks, the demo);
* ``dp``            data parallelism: one rank per fork group (DeepConf groups pick it in the
                    main process; ``n > 1`` and frontend forks follow their announced prefix
                    in the DP controller, hook below), the controller's idle sleep, and how
                    many ranks a CPU holds;
* ``guards``        400s for the two requests SGLang 0.5.23 would crash its scheduler on
                    (``top_k`` past 2**30, token ids outside the vocabulary), on every route.
"""

from __future__ import annotations

from sglang_pr.internals import Hook, register_hooks

HOOKS: tuple[Hook, ...] = (
    # The scheduler assembles /server_info's internal state here; we add its KV accounting.
    Hook("sglang.srt.managers.scheduler_components.internal_state."
         "SchedulerInternalStateController._add_memory_usage",
         "sglang_pr.server.kv_accounting:_add_kv_state", "after"),
    # The DP controller places each request on its own; we keep a fork's branches together.
    Hook("sglang.srt.managers.data_parallel_controller.DataParallelController."
         "dispatching_with_trace", "sglang_pr.server.dp:_before_dispatch", "before"),
    # Its loop never blocks, --sleep-on-idle or not: an idle DP server would spin a core.
    Hook("sglang.srt.managers.data_parallel_controller.DataParallelController.event_loop",
         "sglang_pr.server.dp:_before_event_loop", "before"),
    # Each rank notes which groups reached it (/server_info: sglang_pr_dp), to check the above.
    Hook("sglang.srt.managers.scheduler.Scheduler.handle_generate_request",
         "sglang_pr.server.dp:_count_request", "before"),
    # SGLang validates sampling params here but lets a top_k that overflows int32 through.
    Hook("sglang.srt.sampling.sampling_params.SamplingParams.verify",
         "sglang_pr.server.guards:_after_sampling_verify", "after"),
    # ... and each tokenized request here, without checking its ids against the vocabulary.
    Hook("sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_one_request",
         "sglang_pr.server.guards:_before_validate_request", "before"),
)


def register(features: list[str]) -> None:
    register_hooks(HOOKS)
    features.append("kv_accounting")
    features.append("dp_fork_affinity")
    features.append("request_guards")
