"""Spending limits: stop a team at a cost (:class:`CostTermination`)."""

from ._termination import CostTermination

__all__ = ["CostTermination"]
