"""The response function: sampled outcomes follow its own true probabilities, and the causal
structure (organic-only no-send, reachability, unsubscribes, fatigue, consent, churn) holds."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from core.errors import InputError
from world import ActionBatch, ContactState, World, WorldConfig
from world.timeutil import DAY_NS, HOUR_NS

EMAIL, SMS, WECHAT, PUSH = 1, 0, 2, 3


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(WorldConfig(customers=1500, days=60, seed=5))


@pytest.fixture(scope="module")
def state(world) -> ContactState:
    return world.initial_state()


def _batch(world, rng, n, channel=None, offer=None, days_after=1.0):
    p = rng.integers(0, world.n_persons, n)
    ch = rng.integers(-1, 4, n) if channel is None else np.full(n, channel)
    off = rng.integers(-1, len(world.catalog.offers), n) if offer is None else np.full(n, offer)
    off = np.where(ch < 0, -1, off)
    at = world.end_ns + (rng.random(n) * days_after * DAY_NS).astype(np.int64)
    return ActionBatch(p, ch, off, at.view("datetime64[ns]"))


def _z(observed: np.ndarray, p: np.ndarray) -> float:
    return float((observed.sum() - p.sum()) / np.sqrt(max((p * (1 - p)).sum(), 1e-12)))


def test_sampled_frequencies_match_true_probabilities(world, state):
    rng = np.random.default_rng(0)
    actions = _batch(world, rng, 200_000)
    probs = world.true_probabilities(actions, state)
    out = world.respond(actions, state.copy(), np.random.default_rng(1))
    for name in ("delivered", "opened", "clicked", "converted", "unsubscribed"):
        z = _z(getattr(out, name), getattr(probs, name))
        assert abs(z) < 4.5, f"{name}: z = {z:.2f}"
    # funnel nesting and the window
    assert not np.any(out.opened & ~out.delivered) and not np.any(out.clicked & ~out.opened)
    assert not np.any(out.unsubscribed & ~out.delivered)
    send_at = actions.send_at
    for name in ("delivered_at", "opened_at", "clicked_at", "converted_at", "unsubscribed_at"):
        t = getattr(out, name)
        ok = ~np.isnat(t)
        assert np.array_equal(ok, getattr(out, name.removesuffix("_at")))
        assert np.all(t[ok] >= send_at[ok]) and np.all(t[ok] < send_at[ok] + np.timedelta64(24, "h"))


def test_mean_value_matches_expected_value(world, state):
    rng = np.random.default_rng(2)
    actions = _batch(world, rng, 100_000)
    probs = world.true_probabilities(actions, state)
    ratios = [world.respond(actions, state.copy(), np.random.default_rng(10 + k)).value.sum()
              / probs.expected_value.sum() for k in range(6)]
    assert abs(np.mean(ratios) - 1.0) < 0.03, ratios
    out = world.respond(actions, state.copy(), np.random.default_rng(3))
    assert np.all(out.value >= 0) and np.all(out.value[~out.converted] == 0)


def test_no_send_converts_organically_only(world, state):
    rng = np.random.default_rng(4)
    actions = _batch(world, rng, 100_000, channel=-1)
    probs = world.true_probabilities(actions, state)
    assert np.all(probs.delivered == 0) and np.all(probs.campaign == 0)
    assert np.allclose(probs.converted, probs.organic)
    out = world.respond(actions, state.copy(), np.random.default_rng(5))
    assert not out.delivered.any() and not out.campaign.any() and not out.unsubscribed.any()
    assert abs(_z(out.converted, probs.organic)) < 4.5
    assert out.converted.sum() > 100  # organic purchases do happen
    # a message can only add to the organic probability
    sent = ActionBatch(actions.person_id, np.full(len(actions), EMAIL), np.zeros(len(actions)), actions.send_at)
    assert np.all(world.true_probabilities(sent, state).converted >= probs.converted - 1e-15)


def test_unreachable_channels_never_deliver(world, state):
    reach = world.traits.reachable
    rng = np.random.default_rng(6)
    for c in range(4):
        persons = np.flatnonzero(~reach[:, c])
        assert len(persons) > 0
        at = np.full(len(persons), world.end_ns + DAY_NS).view("datetime64[ns]")
        actions = ActionBatch(persons, np.full(len(persons), c), np.zeros(len(persons)), at)
        assert np.all(world.true_probabilities(actions, state).delivered == 0)
        assert not world.respond(actions, state.copy(), rng).delivered.any()


def test_unsubscribed_channel_is_never_delivered_again(world):
    s = world.initial_state()
    persons = np.flatnonzero(world.traits.reachable[:, EMAIL])[:200]
    s.unsubscribed[persons, EMAIL] = True
    at = np.full(len(persons), world.end_ns + DAY_NS).view("datetime64[ns]")
    actions = ActionBatch(persons, np.full(len(persons), EMAIL), np.zeros(len(persons)), at)
    assert np.all(world.true_probabilities(actions, s).delivered == 0)
    sms = ActionBatch(persons, np.full(len(persons), SMS), np.zeros(len(persons)), at)
    reachable_sms = world.traits.reachable[persons, SMS] & ~s.unsubscribed[persons, SMS]
    assert np.all(world.true_probabilities(sms, s).delivered[reachable_sms] > 0)  # other channels still work


def test_fatigue_raises_unsubscribes_and_lowers_opens(world):
    fresh = ContactState.empty(world.n_persons, world.config.response.fatigue_half_life_days)
    tired = fresh.copy()
    t0 = world.end_ns + DAY_NS
    tired.fatigue[:] = 5.0
    tired.fatigue_at[:] = np.datetime64(t0, "ns")
    persons = np.arange(world.n_persons)
    at = np.full(len(persons), t0 + HOUR_NS).view("datetime64[ns]")
    actions = ActionBatch(persons, np.full(len(persons), EMAIL), np.zeros(len(persons)), at)
    a, b = world.true_probabilities(actions, fresh), world.true_probabilities(actions, tired)
    d = a.delivered > 0
    assert np.all(b.unsubscribed[d] > a.unsubscribed[d])
    assert np.all(b.opened[d] <= a.opened[d]) and b.opened.sum() < a.opened.sum()
    # fatigue decays: a week later most of it is gone
    later = ActionBatch(persons, actions.channel, actions.offer, at + np.timedelta64(30, "D"))
    assert world.true_probabilities(later, tired).unsubscribed.sum() < b.unsubscribed.sum()


def test_respond_records_contacts_and_fatigue(world):
    s = ContactState.empty(world.n_persons, world.config.response.fatigue_half_life_days)
    persons = np.flatnonzero(world.traits.reachable[:, EMAIL])[:300]
    at = np.full(len(persons), world.end_ns + DAY_NS).view("datetime64[ns]")
    actions = ActionBatch(persons, np.full(len(persons), EMAIL), np.zeros(len(persons)), at)
    before = world.true_probabilities(actions, s)
    out = world.respond(actions, s, np.random.default_rng(7))
    assert np.all(s.sends[persons, EMAIL] == 1)
    assert np.array_equal(s.fatigue[persons] > 0, out.delivered)
    assert np.array_equal(s.unsubscribed[persons, EMAIL], out.unsubscribed)
    again = ActionBatch(persons, actions.channel, actions.offer, at + np.timedelta64(1, "h"))
    after = world.true_probabilities(again, s)
    dl = out.delivered & ~out.unsubscribed
    assert np.all(after.unsubscribed[dl] > before.unsubscribed[dl])


def test_sending_without_consent_is_costly(world, state):
    consent = world.traits.consent[:, EMAIL]
    persons = np.flatnonzero(world.traits.reachable[:, EMAIL] & ~state.unsubscribed[:, EMAIL])
    at = np.full(len(persons), world.end_ns + DAY_NS).view("datetime64[ns]")
    actions = ActionBatch(persons, np.full(len(persons), EMAIL), np.zeros(len(persons)), at)
    p = world.true_probabilities(actions, state)
    u = p.unsubscribed / p.delivered
    assert np.median(u[~consent[persons]]) > 5 * np.median(u[consent[persons]])


def test_churned_persons_barely_respond(world, state):
    t = world.traits
    at_ns = world.end_ns + DAY_NS
    churned = t.churn_ns <= at_ns
    assert churned.any() and (~churned).any()
    persons = np.arange(world.n_persons)
    actions = ActionBatch(persons, np.full(len(persons), EMAIL), np.zeros(len(persons)),
                          np.full(len(persons), at_ns).view("datetime64[ns]"))
    p = world.true_probabilities(actions, state)
    d = p.delivered > 0
    open_rate = p.opened[d] / p.delivered[d]
    assert open_rate[churned[d]].mean() < 0.4 * open_rate[~churned[d]].mean()
    assert p.organic[churned].mean() < 0.2 * p.organic[~churned].mean()


def test_send_hour_and_offer_matter(world, state):
    """Personalisation must matter: the best hour and offer per person beat a fixed choice."""
    persons = np.flatnonzero(world.traits.reachable[:, PUSH])
    n = len(persons)
    base = world.end_ns + DAY_NS - (world.end_ns % DAY_NS)
    opens = np.stack([world.true_probabilities(ActionBatch(
        persons, np.full(n, PUSH), np.zeros(n), np.full(n, base + h * HOUR_NS).view("datetime64[ns]")), state).opened
        for h in range(24)], axis=1)
    assert opens.max(axis=1).mean() > 1.3 * opens.mean(axis=0).max()
    values = np.stack([world.true_probabilities(ActionBatch(
        persons, np.full(n, PUSH), np.full(n, o), np.full(n, base).view("datetime64[ns]")), state).expected_value
        for o in range(len(world.catalog.offers))], axis=1)
    assert len(np.unique(values.argmax(axis=1))) >= 3


def test_action_validation_gives_clear_errors(world, state):
    at = np.full(2, world.end_ns).view("datetime64[ns]")
    with pytest.raises(InputError, match="person_id"):
        world.true_probabilities(ActionBatch([0, world.n_persons], [0, 0], [0, 0], at), state)
    with pytest.raises(InputError, match="channel"):
        world.true_probabilities(ActionBatch([0, 1], [0, 7], [0, 0], at), state)
    with pytest.raises(InputError, match="no-send"):
        world.true_probabilities(ActionBatch([0, 1], [-1, 0], [2, 0], at), state)
    with pytest.raises(InputError, match="rows"):
        world.true_probabilities(ActionBatch([0, 1], [0], [0, 0], at), state)
    with pytest.raises(InputError, match="ContactState"):
        world.true_probabilities(ActionBatch([0, 1], [0, 0], [0, 0], at), ContactState.empty(3, 4.0))
    with pytest.raises(InputError, match="Generator"):
        world.respond(ActionBatch([0, 1], [0, 0], [0, 0], at), state.copy(), 42)


def test_contact_state_copy_and_pickle(world, state):
    c = state.copy()
    c.fatigue[:] += 1
    c.unsubscribed[:] = True
    assert not state.unsubscribed.all()
    back = pickle.loads(pickle.dumps(state))
    assert back.equals(state)


def test_respond_is_seeded(world, state):
    rng = np.random.default_rng(8)
    actions = _batch(world, rng, 5000)
    a = world.respond(actions, state.copy(), np.random.default_rng(9))
    b = world.respond(actions, state.copy(), np.random.default_rng(9))
    for name in ("converted", "value", "opened_at", "converted_at"):
        x, y = getattr(a, name), getattr(b, name)
        if x.dtype.kind == "M":
            x, y = x.view(np.int64), y.view(np.int64)
        assert np.array_equal(x, y)


def test_organic_purchase_probability_is_the_no_send_conversion(world, state):
    start = world.history_end + np.timedelta64(1, "D")
    p = world.organic_purchase_probability(start, start + np.timedelta64(1, "D"))
    at = np.full(world.n_persons, start.value).view("datetime64[ns]")
    q = world.true_probabilities(ActionBatch.no_send(np.arange(world.n_persons), at), state)
    assert np.allclose(p, q.converted)
    month = world.organic_purchase_probability(start, start + np.timedelta64(30, "D"))
    assert np.all(month >= p) and month.mean() > 5 * p.mean()
