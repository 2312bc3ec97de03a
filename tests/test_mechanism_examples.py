"""Worked examples and edge cases of the mechanism, with exact expected values."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from pydantic import ValidationError

from auctioneer.mechanism import MechanismConfigError, check_mechanism
from auctioneer.mechanism.aggregation import AGGREGATIONS, AggregationRule, linear_aggregate
from auctioneer.mechanism.payments import PaymentInputs, quadrature_second_price
from auctioneer.settings import CheckedMechanism
from protocol.draw import race_noise, uniform_draw
from protocol.market_rules import MechanismSettings
from tests.helpers import Instance, run_instance

ARTICLE = Instance([{"Large": 0.8, "Generative": 0.2}, {"Large": 1.0}, {"Generative": 1.0}], [1.0, 2.0, 2.0], None, 0.0)


def test_article_example_linear_first_price() -> None:
    outcome = run_instance(ARTICLE, "linear", "first_price")
    assert outcome.distribution_mapping() == pytest.approx({"Generative": 0.44, "Large": 0.56})
    assert outcome.payments.tolist() == [1.0, 2.0, 2.0]


def test_article_example_second_price_closed_form() -> None:
    z = run_instance(ARTICLE, "linear", "second_price").payments
    # Agent 1: q_-1 = (Large 0.5, Generative 0.5), TV(p_1, q_-1) = 0.3, B_-1 = 4.
    assert z[0] == pytest.approx(0.3 * 4 * (math.log(1 + 1 / 4) - 1 / 5))
    # Agent 2: q_-2 = (Large 0.8/3, Generative 2.2/3), TV = 1 - 0.8/3, B_-2 = 3.
    assert z[1] == pytest.approx((1 - 0.8 / 3) * 3 * (math.log(1 + 2 / 3) - 2 / 5))


def test_article_example_critical_bid_under_stable_and_greedy() -> None:
    seed = bytes.fromhex("ab" * 32)
    stable = run_instance(ARTICLE, payment="critical_bid", seed=seed, mode="stable")
    log_generative, log_large = race_noise(["Generative", "Large"], seed)
    assert stable.token == "Large"
    # Agent 2's lines cross where 2.2 / E_Generative = (0.8 + s) / E_Large.
    crossing = 2.2 * math.exp(log_large - log_generative) - 0.8
    assert stable.payments.tolist() == pytest.approx([0.0, crossing, 0.0], abs=1e-12)
    assert crossing == pytest.approx(1.0602, abs=1e-4)
    assert stable.sponsors.tolist() == pytest.approx([0.8 / 2.8, 2.0 / 2.8, 0.0])
    greedy = run_instance(ARTICLE, payment="critical_bid", seed=seed, mode="greedy")
    assert (greedy.token, greedy.payments.tolist()) == ("Large", pytest.approx([0.0, 1.4, 0.0], abs=1e-12))


def test_token_draw_is_the_specified_hash() -> None:
    seed = b"\x01" * 32
    expected = int(hashlib.sha256(seed + b"token").hexdigest()[:16], 16) / 2**64
    assert uniform_draw(seed) == expected


def test_greedy_ties_go_to_canonical_first() -> None:
    instance = Instance([{"b": 0.5, "a": 0.5}], [1.0], None, 0.0)
    assert run_instance(instance, mode="greedy").token == "a"


def test_low_temperature_sharpens_the_draw() -> None:
    # u for this seed is about 0.52: plain sampling picks "b", near-zero temperature the mode "a".
    seed = next(bytes([i]) * 32 for i in range(256) if 0.5 < uniform_draw(bytes([i]) * 32) < 0.6)
    instance = Instance([{"a": 0.6, "b": 0.4}], [1.0], None, 0.0)
    assert run_instance(instance, seed=seed).token == "a"
    sharp = run_instance(Instance([{"a": 0.45, "b": 0.55}], [1.0], None, 0.0), seed=seed, temperature=0.05)
    assert sharp.token == "b"


def test_zero_bids_weigh_agents_equally_and_charge_nothing() -> None:
    instance = Instance([{"a": 1.0}, {"b": 1.0}], [0.0, 0.0], None, 0.0)
    outcome = run_instance(instance, payment="first_price")
    assert outcome.distribution.tolist() == [0.5, 0.5]
    assert outcome.payments.tolist() == [0.0, 0.0]


def test_reference_is_a_reserve() -> None:
    alone = Instance([{"a": 1.0}], [1.0], None, 0.0)
    assert run_instance(alone, payment="second_price").payments[0] == 0.0
    reserved = Instance([{"a": 1.0}], [1.0], {"b": 1.0}, 1.0)
    outcome = run_instance(reserved, payment="second_price")
    assert outcome.distribution_mapping() == pytest.approx({"a": 0.5, "b": 0.5})
    assert outcome.payments[0] == pytest.approx(1.0 * (math.log(2) - 0.5))


def test_log_linear_keeps_disjoint_supports_alive() -> None:
    outcome = run_instance(Instance([{"a": 1.0}, {"b": 1.0}], [1.0, 3.0], None, 0.0), "log_linear")
    q = outcome.distribution_mapping()
    assert 0 < q["a"] < q["b"] and sum(q.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("panels,nodes", [(8, 8), (2, 4)])
def test_quadrature_agrees_with_linear_closed_form(panels: int, nodes: int) -> None:
    rng = np.random.default_rng(7)
    matrix = rng.dirichlet(np.ones(12), size=30)
    bids = rng.exponential(1.0, size=30)
    bids[:3] = [1e-4, 50.0, 0.0]
    q = linear_aggregate(matrix, bids / bids.sum(), 1e-6)
    vocab = [f"t{k:02d}" for k in range(12)]
    inputs = PaymentInputs(matrix, bids, 30, q, "linear", 1e-6, vocab, int(np.argmax(q)), bytes(32), "greedy", 1.0)
    closed = run_auction_closed_form(inputs)
    np.testing.assert_allclose(quadrature_second_price(inputs, panels, nodes), closed, atol=1e-9, rtol=1e-9)


def run_auction_closed_form(inputs: PaymentInputs) -> np.ndarray:
    from auctioneer.mechanism.payments import linear_second_price

    return linear_second_price(inputs)


def test_a_new_rule_is_one_function_plus_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def harmonic(matrix: np.ndarray, weights: np.ndarray, eps: float) -> np.ndarray:
        q = 1.0 / (weights @ (1.0 / ((1 - eps) * matrix + eps / matrix.shape[1])))
        return q / q.sum()

    monkeypatch.setitem(AGGREGATIONS, "harmonic", AggregationRule(harmonic))
    outcome = run_instance(ARTICLE, "harmonic", "second_price")
    assert outcome.distribution.sum() == pytest.approx(1.0)
    assert np.all((outcome.payments > 0) & (outcome.payments < np.asarray(ARTICLE.bids)))


UNKNOWN_RULES = [{"aggregation": "median"}, {"payment": "vcg"}, {"mode": "beam"}]


@pytest.mark.parametrize("setting", UNKNOWN_RULES)
def test_the_mechanism_refuses_unknown_rules(setting: dict[str, str]) -> None:
    with pytest.raises(MechanismConfigError, match="unknown"):
        check_mechanism(MechanismSettings(**setting))  # type: ignore[arg-type]


@pytest.mark.parametrize("setting", [*UNKNOWN_RULES, {"temperature": 0.0}, {"eps": 1.0}])
def test_settings_refuse_unknown_rules_and_values_out_of_range(setting: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CheckedMechanism(**setting)  # type: ignore[arg-type]
