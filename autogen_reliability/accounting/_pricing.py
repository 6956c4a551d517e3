"""What the old public path ``autogen_reliability.accounting.pricing`` holds, for one release; nothing else imports it.

The table, :class:`TokenUsage` and :class:`Cost` live in
:mod:`~autogen_reliability.accounting._price_table`, the overrides file's
format and its pydantic model in
:mod:`~autogen_reliability.accounting._price_overrides`. Which provider and
model a client talks to (:func:`infer_provider`, :func:`model_of`) is
knowledge of AutoGen's clients: it lives in ``providers/_identity.py`` and is
imported here for the old path only.
"""

from __future__ import annotations

from ..providers import infer_provider, model_of
from ._genai_pricing import GENAI_PRICES_VERSION
from ._price_table import Cost, PricingTable, TokenUsage

__all__ = ["GENAI_PRICES_VERSION", "Cost", "PricingTable", "TokenUsage", "infer_provider", "model_of"]
