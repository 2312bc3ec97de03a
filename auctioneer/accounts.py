"""Agents' budget accounts across the exchange: budget, spent (committed payments) and reserved.

A bid reserves its amount when it is accepted; when its round is committed the payment is added to
``spent`` and the reservation released. A bid is accepted only if it fits in what remains after
``spent`` and ``reserved``, and a payment never exceeds its bid, so an agent can never be committed
beyond its budget, however many of its markets close in the same instant. Reservations live in
memory: open rounds are not durable, and after a restart they are opened again with no bids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from auctioneer.ledger import AccountState
from protocol.errors import ErrorCode, ProtocolError


@dataclass
class Account:
    budget: float | None
    spent: float = 0.0
    reserved: float = 0.0
    open_bids: int = 0

    @property
    def remaining(self) -> float | None:
        return None if self.budget is None else self.budget - self.spent - self.reserved


class Accounts:
    """Every agent's account. An agent's budget (None: unlimited) is the one an operator set for it
    (``set_budgets``, then :meth:`set_budget`), else what ``configured`` gives."""

    def __init__(
        self,
        configured: Callable[[str], float | None],
        spent: Mapping[str, float],
        set_budgets: Mapping[str, float | None],
    ) -> None:
        self._configured = configured
        self._set_budgets = dict(set_budgets)
        self._accounts = {agent: Account(self.budget_of(agent), amount) for agent, amount in spent.items()}

    def __getitem__(self, agent: str) -> Account:
        account = self._accounts.get(agent)
        if account is None:
            account = self._accounts[agent] = Account(self.budget_of(agent))
        return account

    def budget_of(self, agent: str) -> float | None:
        return self._set_budgets[agent] if agent in self._set_budgets else self._configured(agent)

    def check_budget(self, agent: str, budget: float | None) -> None:
        """Refuse (``INVALID_SETTINGS``) a budget below what ``agent`` has spent and its open bids reserve."""
        account = self[agent]
        if budget is not None and budget < account.spent + account.reserved:
            raise ProtocolError(
                ErrorCode.INVALID_SETTINGS,
                f"a budget of {budget} is below what {agent} has spent ({account.spent}) and its open bids "
                f"reserve ({account.reserved})",
                "budget",
            )

    def set_budget(self, agent: str, budget: float | None) -> Account:
        """Give ``agent`` the budget an operator set (checked by :meth:`check_budget` and recorded first)."""
        self._set_budgets[agent] = budget
        account = self[agent]
        account.budget = budget
        return account

    def reserve(self, agent: str, amount: float) -> None:
        """Reserve ``amount`` for a bid, or refuse it with ``BUDGET_EXCEEDED``."""
        account = self[agent]
        remaining = account.remaining
        if remaining is not None and amount > remaining:
            raise ProtocolError(
                ErrorCode.BUDGET_EXCEEDED,
                f"bid {amount} exceeds your remaining budget {max(remaining, 0.0)} "
                f"(budget {account.budget}, spent {account.spent}, reserved by open bids {account.reserved})",
            )
        account.reserved += amount
        account.open_bids += 1

    def release(self, agent: str, amount: float, payment: float = 0.0) -> None:
        """A bid's round is over: release its reservation and add what it paid."""
        account = self[agent]
        account.spent += payment
        account.open_bids -= 1
        # Adding and taking away the same amounts in another order can leave a rounding residue.
        account.reserved = max(account.reserved - amount, 0.0) if account.open_bids else 0.0

    def forget(self, agent: str) -> bool:
        """Whether ``agent`` may be forgotten (no open bid); its account goes too if it never paid
        (one that paid stays: what it spent is only read from the ledger at start)."""
        account = self._accounts.get(agent)
        if account is None:
            return True
        if account.open_bids:
            return False
        if not account.spent:
            del self._accounts[agent]
        return True

    def snapshot(self, agents: Iterable[str]) -> dict[str, AccountState]:
        """The accounts of ``agents`` as the ledger keeps them."""
        return {agent: self.state(agent) for agent in agents}

    def state(self, agent: str) -> AccountState:
        account = self[agent]
        return AccountState(account.budget, account.reserved, account.spent)
