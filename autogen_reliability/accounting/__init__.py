"""Token and cost accounting: pricing, usage events, and the recorder that never loses them."""

from .. import _compat
from ._events import UsageEvent
from ._pricing import Cost, PricingTable, TokenUsage
from ._recorder import UsageRecorder, UsageSink
from ._usage_tap import ProviderUsage, attach_usage_tap, capture_provider_usage

__all__ = [
    "Cost",
    "PricingTable",
    "ProviderUsage",
    "TokenUsage",
    "UsageEvent",
    "UsageRecorder",
    "UsageSink",
    "attach_usage_tap",
    "capture_provider_usage",
]

# Names that were importable from here until 0.1.0 -> the package that holds them now.
_MOVED = {
    "infer_provider": "autogen_reliability.providers",
    "model_of": "autogen_reliability.providers",
}


def __getattr__(name: str) -> object:
    return _compat.moved_attribute(__name__, name, _MOVED)
