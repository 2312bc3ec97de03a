"""Agents' budget accounts as one exchange process sees them: budget, spent, reserved, and (on a
shared store) the slice of the budget this process holds.

A bid reserves, when it is accepted, the most its market's payment rule can charge for it; when its
round is committed the payment is added to ``spent`` and the reservation released. A bid is accepted
only if it fits in what remains, and a payment never exceeds its reservation, so an agent can never
be committed beyond its budget, however many of its markets close in the same instant.
Reservations live in memory: open rounds are not durable, and after a restart they are opened again
with no bids.

What remains is, in an exchange of one process, the budget less what was spent and reserved. In an
exchange of several shards (``auctioneer.shards``) it is the slice this shard leased of the budget
less what its open bids reserve: a bid that does not fit leases more first (one database update;
most bids touch no database), and idle slices are given back. Refused (``BUDGET_EXCEEDED``) only
once the whole exchange has no room left that this shard could lease.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from auctioneer.ledger import AccountState
from auctioneer.shards import Shard, SoleShard
from protocol.errors import ErrorCode, ProtocolError

SLICE_BIDS = 8  # a slice leased when a bid does not fit covers this many bids like it
IDLE_SECONDS = 2.0  # a slice unused this long (no open bid) is given back


@dataclass
class Account:
    budget: float | None
    spent: float = 0.0
    reserved: float = 0.0
    open_bids: int = 0
    held: float = math.inf  # of the budget, what this process may still commit (its slice, or all of it)
    last_used: float = 0.0  # when a bid last reserved against it
    stale: bool = False  # another shard changed the budget: the next bid learns it, leasing

    @property
    def remaining(self) -> float | None:
        if self.budget is None:
            return None
        local = self.budget - self.spent - self.reserved
        return min(local, self.held - self.reserved)


class Accounts:
    """Every agent's account. An agent's budget (None: unlimited) is the one an operator set for it
    (``set_budgets``, then :meth:`set_budget`), else what ``configured`` gives."""

    def __init__(
        self,
        configured: Callable[[str], float | None],
        spent: Mapping[str, float],
        set_budgets: Mapping[str, float | None],
        shard: Shard | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._configured = configured
        self._set_budgets = dict(set_budgets)
        self._shard = shard or SoleShard("", "")
        self._sliced = not isinstance(self._shard, SoleShard)
        self._clock = clock or (lambda: 0.0)
        self._accounts = {agent: self._new(agent, amount) for agent, amount in spent.items()}

    def _new(self, agent: str, spent: float = 0.0) -> Account:
        return Account(self.budget_of(agent), spent, held=0.0 if self._sliced else math.inf)

    def __getitem__(self, agent: str) -> Account:
        account = self._accounts.get(agent)
        if account is None:
            account = self._accounts[agent] = self._new(agent)
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
        """Reserve ``amount`` for a bid (leasing more of the budget first if this shard holds too
        little of it), or refuse it with ``BUDGET_EXCEEDED``."""
        account = self[agent]
        remaining = account.remaining
        if self._sliced and (account.stale or (remaining is not None and amount > remaining)):
            self._lease(agent, account, amount - (remaining or 0.0) if remaining is not None else amount)
            remaining = account.remaining
        if remaining is not None and amount > remaining:
            if self._sliced:
                self._shard.notify("wanted", agent)  # shards holding idle slices of it give them back
            raise ProtocolError(
                ErrorCode.BUDGET_EXCEEDED,
                f"bid {amount} exceeds your remaining budget {max(remaining, 0.0)} "
                f"(budget {account.budget}, spent {account.spent}, reserved by open bids {account.reserved})",
            )
        account.reserved += amount
        account.open_bids += 1
        account.last_used = self._clock()

    def _lease(self, agent: str, account: Account, short: float) -> None:
        granted, budget = self._shard.lease_budget(agent, max(short, SLICE_BIDS * short), account.budget)
        account.held += granted
        account.budget, account.stale = budget, False

    def release(self, agent: str, amount: float, payment: float = 0.0) -> None:
        """A bid's round is over: release its reservation and add what it paid (out of the slice)."""
        account = self[agent]
        account.spent += payment
        if self._sliced:
            account.held = max(account.held - payment, 0.0)
        account.open_bids -= 1
        # Adding and taking away the same amounts in another order can leave a rounding residue.
        account.reserved = max(account.reserved - amount, 0.0) if account.open_bids else 0.0

    def after(self, settlements: Iterable[tuple[str, float, float]]) -> dict[str, AccountState]:
        """The accounts as :meth:`release` of each ``(agent, reserved, paid)`` would leave them, without
        releasing anything (what a commit writes, before it is known to succeed)."""
        reserved: dict[str, float] = {}
        spent: dict[str, float] = {}
        released: dict[str, int] = {}
        for agent, amount, payment in settlements:
            account = self[agent]
            reserved[agent] = reserved.get(agent, account.reserved) - amount
            spent[agent] = spent.get(agent, account.spent) + payment
            released[agent] = released.get(agent, 0) + 1
        return {
            agent: AccountState(
                self[agent].budget,
                max(left, 0.0) if self[agent].open_bids > released[agent] else 0.0,
                spent[agent],
            )
            for agent, left in reserved.items()
        }

    def give_back_idle(self, now: float, agents: Iterable[str] | None = None) -> None:
        """Give back what this shard holds of budgets no open bid uses: of ``agents`` (another shard
        wants them) at once, of every other agent once idle for :data:`IDLE_SECONDS`."""
        if not self._sliced:
            return
        wanted = set(agents or ())
        for agent, account in self._accounts.items():
            unused = account.held - account.reserved
            idle = account.open_bids == 0 and now - account.last_used >= IDLE_SECONDS
            if unused > 0 and account.budget is not None and (agent in wanted or idle):
                self._shard.give_back(agent, unused)
                account.held -= unused

    def forget(self, agent: str) -> bool:
        """Whether ``agent`` may be forgotten (no open bid, nothing held); its account goes too if it
        never paid (one that paid stays: what it spent is only read from the ledger at start)."""
        account = self._accounts.get(agent)
        if account is None:
            return True
        if account.open_bids or (self._sliced and account.held > 0):
            return False
        if not account.spent:
            del self._accounts[agent]
        return True

    def refresh(self, agent: str) -> None:
        """Another shard changed ``agent``'s budget: hold nothing of it until the next bid leases again."""
        account = self._accounts.get(agent)
        self._set_budgets.pop(agent, None)
        if account is not None and self._sliced:
            if account.held != math.inf:
                self._shard.give_back(agent, account.held - account.reserved)
            account.held, account.stale = account.reserved, True

    def snapshot(self, agents: Iterable[str]) -> dict[str, AccountState]:
        """The accounts of ``agents`` as the ledger keeps them."""
        return {agent: self.state(agent) for agent in agents}

    def state(self, agent: str) -> AccountState:
        account = self[agent]
        return AccountState(account.budget, account.reserved, account.spent)
