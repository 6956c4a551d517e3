"""Pricing: the :class:`PricingTable` and its value types, where ``from ._pricing import ...`` finds them.

The table, :class:`TokenUsage` and :class:`Cost` live in
:mod:`~autogen_reliability.accounting._price_table` (with what was measured
before genai-prices' own ``calc_price`` replaced ours), the overrides file's
format and its pydantic model in
:mod:`~autogen_reliability.accounting._price_overrides`; they are imported here
so that ``from ._pricing import PricingTable`` and the old public path
``autogen_reliability.accounting.pricing`` keep working. Which provider and
model a client talks to (:func:`infer_provider`, :func:`model_of`) is
knowledge of AutoGen's clients: it lives in ``providers/_identity.py`` and is
imported here for the old path only.
"""

from __future__ import annotations

from ..providers import infer_provider, model_of
from ._price_table import GENAI_PRICES_VERSION, Cost, PricingTable, TokenUsage

__all__ = ["GENAI_PRICES_VERSION", "Cost", "PricingTable", "TokenUsage", "infer_provider", "model_of"]
