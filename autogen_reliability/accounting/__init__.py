"""Token and cost accounting: pricing, usage events, and the recorder that never loses them."""

from .. import _compat
from ._events import UsageEvent
from ._price_table import Cost, PricingTable, TokenUsage
from ._recorder import UsageRecorder, UsageSink

__all__ = [
    "Cost",
    "PricingTable",
    "TokenUsage",
    "UsageEvent",
    "UsageRecorder",
    "UsageSink",
]

# Names that used to be importable from here -> the package that holds them now.
_MOVED = {
    "ProviderUsage": "autogen_reliability.providers",
    "attach_usage_tap": "autogen_reliability.providers",
    "capture_provider_usage": "autogen_reliability.providers",
    "infer_provider": "autogen_reliability.providers",
    "model_of": "autogen_reliability.providers",
}


def __getattr__(name: str) -> object:
    return _compat.moved_attribute(__name__, name, _MOVED)
