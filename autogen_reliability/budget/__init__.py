"""Spending limits: budgets, a hard stop on what a project, session or agent spends per period (shared by every
process on a ledger), and :class:`CostTermination`, which stops a team at a cost."""

from .._errors import BudgetExceededError
from ._policy import BudgetAlert, BudgetPolicy, log_budget_alert
from ._termination import CostTermination

__all__ = ["BudgetAlert", "BudgetExceededError", "BudgetPolicy", "CostTermination", "log_budget_alert"]
