"""Stable sampling, critical-bid payments and sponsors (docs/mechanism.md section 5) against the slow
oracle (winner recomputed at each bid, critical bid by bisection) and the properties they must have."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent_client.verify import OwnBid, result_problems
from auctioneer.mechanism import AuctionOutcome, MechanismConfigError, check_mechanism, oracle
from protocol.draw import race_noise, stable_index
from protocol.market_rules import MechanismSettings
from protocol.messages import OutcomeDistribution, RoundResult
from tests.helpers import Instance, instances, run_instance

AGGREGATIONS = ["linear", "log_linear"]
MONOTONE = ["stable", "greedy"]
seeds = st.binary(min_size=32, max_size=32)
temperatures = st.sampled_from([0.5, 1.0, 2.0])
CONTESTED_TOKENS = ["a", "b", "c", " d"]


@st.composite
def contested(draw: st.DrawFn) -> Instance:
    """Every agent bids and the supports overlap on a few tokens, so bids decide the winner."""
    n = draw(st.integers(2, 5))

    def distribution() -> dict[str, float]:
        support = draw(st.lists(st.sampled_from(CONTESTED_TOKENS), min_size=1, max_size=3, unique=True))
        raw = draw(st.lists(st.floats(0.05, 1.0), min_size=len(support), max_size=len(support)))
        return {t: w / sum(raw) for t, w in zip(support, raw, strict=True)}

    dists = [distribution() for _ in range(n)]
    bids = draw(st.lists(st.floats(0.1, 10.0), min_size=n, max_size=n))
    reference = draw(st.none() | st.builds(distribution))
    weight = draw(st.floats(0.1, 5.0)) if reference is not None else 0.0
    return Instance(dists, bids, reference, weight)


auction_instances = st.one_of(contested(), instances(max_agents=4))


def oracle_round(instance: Instance, aggregation: str, seed: bytes, mode: str, temperature: float) -> oracle.Round:
    return oracle.Round(
        instance.rows, instance.row_bids, len(instance.dists), aggregation, seed, mode, temperature, 1e-6
    )


def decisive(instance: Instance, aggregation: str, seed: bytes, mode: str, temperature: float) -> bool:
    """True unless the two best tokens tie within rounding: an exact tie is decided by float noise,
    differently by two implementations (agents verify the draw against the published q instead)."""
    q = oracle.aggregate(instance.rows, instance.row_bids, len(instance.dists), aggregation)
    scores = sorted(oracle.race_scores(q, seed, mode, temperature).values(), reverse=True)
    return len(scores) < 2 or scores[0] - scores[1] > 1e-9 * (1 + abs(scores[0]))


def with_bid(instance: Instance, agent: int, bid: float) -> Instance:
    bids = list(instance.bids)
    bids[agent] = bid
    return Instance(instance.dists, bids, instance.reference, instance.reference_weight)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("mode", MONOTONE)
@settings(max_examples=60, deadline=None)
@given(instance=auction_instances, seed=seeds, temperature=temperatures)
def test_critical_bids_match_the_oracle(
    aggregation: str, mode: str, instance: Instance, seed: bytes, temperature: float
) -> None:
    assume(decisive(instance, aggregation, seed, mode, temperature))
    outcome = run_instance(instance, aggregation, "critical_bid", seed, mode=mode, temperature=temperature)
    expected = oracle.payments(
        instance.rows, instance.row_bids, len(instance.dists), aggregation, "critical_bid", seed, mode, temperature
    )
    np.testing.assert_allclose(outcome.payments, expected, rtol=0, atol=1e-6 * (1 + max(instance.bids)))
    assert np.all(outcome.payments >= 0) and np.all(outcome.payments <= np.asarray(instance.bids))
    assert np.all(outcome.payments[np.asarray(instance.bids) == 0] == 0)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("mode", MONOTONE)
@settings(max_examples=40, deadline=None)
@given(instance=auction_instances, seed=seeds, temperature=temperatures, data=st.data())
def test_the_token_wins_exactly_above_the_critical_bid(
    aggregation: str, mode: str, instance: Instance, seed: bytes, temperature: float, data: st.DataObject
) -> None:
    """w wins for every s in (z, b], not just below z, and z does not move while b stays in (z, b]."""
    agent = data.draw(st.integers(0, len(instance.dists) - 1))
    bid = instance.bids[agent]
    assume(bid > 0 and decisive(instance, aggregation, seed, mode, temperature))
    outcome = run_instance(instance, aggregation, "critical_bid", seed, mode=mode, temperature=temperature)
    z = outcome.payments[agent]
    round_ = oracle_round(instance, aggregation, seed, mode, temperature)
    for s in np.linspace(z, bid, 12)[1:]:
        assert round_.winner_at(agent, float(s)) == outcome.token
    if z > 1e-9:
        assert round_.winner_at(agent, z * (1 - 1e-6) - 1e-9) != outcome.token
        assert round_.winner_at(agent, 0.0) != outcome.token
    else:
        assert round_.winner_at(agent, 1e-9 * (1 + bid)) == outcome.token
    moved = float(data.draw(st.floats(z + 1e-6 * (1 + bid), bid))) if bid - z > 2e-6 * (1 + bid) else bid
    again = run_instance(
        with_bid(instance, agent, moved), aggregation, "critical_bid", seed, mode=mode, temperature=temperature
    )
    assert again.token == outcome.token
    assert again.payments[agent] == pytest.approx(z, abs=1e-7 * (1 + bid))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@settings(max_examples=40, deadline=None)
@given(instance=auction_instances, seed=seeds, temperature=temperatures)
def test_the_winner_only_moves_towards_what_the_bidder_wants(
    aggregation: str, instance: Instance, seed: bytes, temperature: float
) -> None:
    """As agent 0 raises its bid the winner's slope c (its own line) never decreases."""
    tokens = sorted({t for d in instance.rows for t in d})
    own = np.array([instance.dists[0].get(t, 0.0) for t in tokens])
    log_noise = race_noise(tokens, seed)
    if aggregation == "linear":
        slope = own * np.exp(-temperature * log_noise)
    else:
        slope = np.log((1 - 1e-6) * own + 1e-6 / len(tokens)) - temperature * log_noise
    round_ = oracle_round(instance, aggregation, seed, "stable", temperature)
    slopes = [slope[tokens.index(round_.winner_at(0, float(s)))] for s in np.linspace(1e-6, 20.0, 60)]
    assert all(later >= earlier - 1e-12 for earlier, later in itertools.pairwise(slopes))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_stable_draws_follow_q_to_the_power_one_over_t(temperature: float) -> None:
    tokens = ["a", "b", "c", "d", "e"]
    q = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
    draws = 20_000
    counts = np.bincount(
        [stable_index(tokens, q, hashlib.sha256(k.to_bytes(4, "big")).digest(), temperature) for k in range(draws)],
        minlength=len(tokens),
    )
    target = q ** (1 / temperature)
    expected = draws * target / target.sum()
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 18.47  # the 0.1% critical value of chi-square with 4 degrees of freedom


@given(instance=instances(), seed=seeds, temperature=temperatures)
def test_the_stable_draw_matches_the_oracle_and_greedy_is_its_noise_free_case(
    instance: Instance, seed: bytes, temperature: float
) -> None:
    stable = run_instance(instance, "linear", seed=seed, mode="stable", temperature=temperature)
    q = stable.distribution_mapping()
    assert stable.token == oracle.choose(q, seed, "stable", temperature)
    greedy = run_instance(instance, "linear", seed=seed, mode="greedy", temperature=temperature)
    assert greedy.token == max(sorted(q, key=lambda t: t.encode()), key=lambda t: q[t])


def test_a_tokens_noise_depends_only_on_the_seed_and_its_own_bytes() -> None:
    seed = bytes(range(32))
    alone = race_noise(["x"], seed)[0]
    among_others = race_noise(["a", "x", "zz"], seed)[1]
    assert alone == among_others
    assert race_noise(["x"], bytes(32))[0] != alone


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@given(instance=instances(), seed=seeds)
def test_sponsors_match_the_oracle(aggregation: str, instance: Instance, seed: bytes) -> None:
    outcome = run_instance(instance, aggregation, "critical_bid", seed, mode="stable")
    expected = oracle.sponsors(instance.rows, instance.row_bids, outcome.token)
    n = len(instance.dists)
    np.testing.assert_allclose(outcome.sponsors, expected[:n], atol=1e-12)
    assert outcome.reference_share == pytest.approx(sum(expected[n:]), abs=1e-12)
    total = outcome.sponsors.sum() + outcome.reference_share
    assert total == pytest.approx(1.0) or total == 0.0


def test_ties_a_lone_bidder_and_a_reserve_under_greedy() -> None:
    # A tie goes to the canonically first token; a bidder alone pays nothing.
    tie = run_instance(Instance([{"b": 0.5, "a": 0.5}], [2.0], None, 0.0), payment="critical_bid", mode="greedy")
    assert (tie.token, tie.payments.tolist()) == ("a", [0.0])
    # With the reference wanting "b" at weight 1, "a" wins from a bid of 1 on: the bidder pays exactly 1.
    reserve = Instance([{"a": 1.0}], [3.0], {"b": 1.0}, 1.0)
    outcome = run_instance(reserve, payment="critical_bid", mode="greedy")
    assert outcome.token == "a" and outcome.payments[0] == pytest.approx(1.0)
    assert outcome.sponsors.tolist() == [1.0] and outcome.reference_share == 0.0
    # Below the reserve the reference's token wins and the bidder pays nothing for it.
    lower = run_instance(with_bid(reserve, 0, 0.5), payment="critical_bid", mode="greedy")
    assert (lower.token, lower.payments.tolist(), lower.reference_share) == ("b", [0.0], 1.0)


def test_critical_bid_is_refused_with_the_non_monotone_draw() -> None:
    with pytest.raises(MechanismConfigError, match="needs mode greedy or stable"):
        check_mechanism(MechanismSettings(payment="critical_bid", mode="sample"))
    check_mechanism(MechanismSettings(payment="critical_bid", mode="stable", aggregation="log_linear"))


def published_result(instance: Instance, outcome: AuctionOutcome, names: list[str]) -> RoundResult:
    """The round_result the auctioneer would broadcast for this outcome."""
    return RoundResult(
        seq=2,
        round=1,
        token=outcome.token,
        text=outcome.token,
        distribution=OutcomeDistribution.from_arrays(outcome.vocab, outcome.distribution),
        bids=dict(zip(names, instance.bids, strict=True)),
        payments=dict(zip(names, outcome.payments.tolist(), strict=True)),
        balances={},
        seed=outcome.seed.hex(),
        seed_commitment=outcome.seed_commitment,
        sponsors=outcome.sponsors_by_name(names),
    )


VERIFIABLE = [
    ("linear", "critical_bid", "stable"),
    ("log_linear", "critical_bid", "stable"),
    ("linear", "critical_bid", "greedy"),
    ("log_linear", "critical_bid", "greedy"),
    ("linear", "second_price", "stable"),
    ("linear", "first_price", "sample"),
]


@pytest.mark.parametrize("aggregation,payment,mode", VERIFIABLE)
@settings(max_examples=40, deadline=None)
@given(instance=auction_instances, seed=seeds, temperature=temperatures)
def test_every_agent_recomputes_its_own_charge_and_share_and_catches_forgeries(
    aggregation: str, payment: str, mode: str, instance: Instance, seed: bytes, temperature: float
) -> None:
    assume(decisive(instance, aggregation, seed, mode, temperature))
    mechanism = MechanismSettings(aggregation=aggregation, payment=payment, mode=mode, temperature=temperature)
    outcome = run_instance(instance, aggregation, payment, seed, mode=mode, temperature=temperature)
    names = [f"agent{i}" for i in range(len(instance.dists))]
    result = published_result(instance, outcome, names)
    weight = instance.reference_weight if instance.reference is not None else 0.0
    for name, wish, bid in zip(names, instance.dists, instance.bids, strict=True):
        own = OwnBid(name, wish, bid)
        assert result_problems(result, result.seed_commitment, mechanism, own, weight) == []
        charged = result.payments[name]
        if charged > 1e-3:
            overcharged = result.model_copy(update={"payments": {**result.payments, name: charged * 1.01}})
            assert any("charged" in p for p in result_problems(overcharged, None, mechanism, own, weight))
        share = result.sponsors.get(name, 0.0)
        if aggregation == "linear" and 1e-3 < share < 0.99:
            moved = {**result.sponsors, name: share * 0.9, "nobody": share * 0.1}
            misattributed = result.model_copy(update={"sponsors": moved})
            assert any("sponsor share" in p for p in result_problems(misattributed, None, mechanism, own, weight))
