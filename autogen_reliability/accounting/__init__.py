"""Token and cost accounting: pricing, usage events, and the recorder that never loses them."""

from ._events import UsageEvent
from ._pricing import Cost, PricingTable, TokenUsage, infer_provider, model_of
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
    "infer_provider",
    "model_of",
]
