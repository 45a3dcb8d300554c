"""The portable CPU platform class (see the package docstring for why it exists)."""

from __future__ import annotations

from sglang.srt.platforms.cpu import CpuDeviceMixin
from sglang.srt.platforms.device_mixin import PlatformEnum
from sglang.srt.platforms.interface import PlatformCapabilities, SRTPlatform

from sglang_pr.runtime_defaults import CPU_SERVER_DEFAULTS, FLAGS_ONLY


class PortableCpuPlatform(CpuDeviceMixin, SRTPlatform):
    """Any x86-64/aarch64 CPU, pure torch: torch_native attention, pytorch sampling, no graphs."""

    _enum = PlatformEnum.OOT
    device_name = "cpu"
    device_type = "cpu"
    # No Triton, no graph capture: SGLang then uses its torch-native allocator paths.
    capabilities = PlatformCapabilities()

    def get_default_attention_backend(self) -> str:
        return str(CPU_SERVER_DEFAULTS["attention_backend"])

    def is_pin_memory_available(self, device=None) -> bool:
        return False

    def apply_server_args_defaults(self, server_args) -> None:
        """Fill the declared CPU defaults SGLang still leaves unset (None); a value the user
        gave, or one SGLang resolved earlier, stands. ``sglang-pr serve`` has already passed
        every declared default the user omitted, so under it this changes nothing."""
        for field, value in CPU_SERVER_DEFAULTS.items():
            if field not in FLAGS_ONLY and getattr(server_args, field, None) is None:
                setattr(server_args, field, value)
