"""The simulated world: persons with known latent traits, their history, and the response function.

    world = World.generate(WorldConfig(customers=20_000, seed=1))   # in memory
    summary = world.write(workspace)                                # raw/ + truth/
    world = World.load(workspace)                                   # the same world, from truth/
    state = world.initial_state()                                   # contacts at history_end
    probs = world.true_probabilities(actions, state)                # closed form
    out = world.respond(actions, state, rng)                        # samples, updates state
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from core.catalog import Catalog
from core.config import dump_config, load_config
from core.errors import InputError, WorkspaceError
from core.types import CATEGORIES, CHANNELS
from core.workspace import Workspace
from world.config import WorldConfig
from world.export import SOURCE_NAMES, RawWriter
from world.history import CHUNK_PERSONS, EVENT_TYPES, PLATFORMS, ChunkHistory, HistoryGenerator
from world.identity import Identities, make_identities
from world.response import (
    ActionBatch,
    ContactState,
    Outcomes,
    ResponseModel,
    ResponseProbabilities,
    check_actions,
)
from world.timeutil import NAT
from world.traits import CH, Traits, sample_persons

# spawn keys of the independent random streams derived from the seed
_TRAITS, _IDENTITY, _HISTORY, _EXPORT, _CUSTOMERS, _SEGMENTS = range(6)
TRUTH_FILES = ("persons.parquet", "record_owner.parquet", "contact_state.parquet", "world.yaml")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SimulationSummary(BaseModel):
    """What ``World.write`` produced (the ``decisioning simulate --json`` object)."""

    customers: int
    days: int
    seed: int
    format: str
    history_start: str
    history_end: str
    rows: dict[str, int]
    malformed: dict[str, int]
    seconds: float
    peak_memory_mb: float
    workspace: str
    raw_files: dict[str, str]
    truth_files: dict[str, str]


@dataclass(frozen=True)
class History:
    """The history as truth-level tables keyed by person_id (no identity fragments, no dirt).

    orders: person_id, ordered_at, gross, category, quantity, offer (None: none), campaign (bool).
    events: person_id, occurred_at, event_type, platform, category.
    sends: person_id, decided_at, sent_at, channel, offer, hour (local), propensity, delivered_at,
    opened_at, clicked_at, converted_at, unsubscribed_at (NaT: none, including after the end),
    value (net value of the conversion, 0 if none).
    """

    orders: pd.DataFrame
    events: pd.DataFrame
    sends: pd.DataFrame


class World:
    """A simulated customer base whose true behaviour is known. See the module docstring."""

    def __init__(self, config: WorldConfig, persons: pd.DataFrame, initial_state: ContactState | None = None):
        self.config = config
        self.catalog: Catalog = config.catalog
        self.persons = persons
        self.history_start = pd.Timestamp(config.history_start)
        self.history_end = pd.Timestamp(config.history_end)
        self.start_ns = int(self.history_start.value)
        self.end_ns = int(self.history_end.value)
        self.traits = Traits.from_frame(persons, config)
        self.segments = self._segments()
        self.model = ResponseModel(config, self.traits, self.segments)
        self._initial_state = initial_state
        self._ids: Identities | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def generate(cls, config: WorldConfig) -> World:
        """Draw the persons of ``config`` (in memory; the history is simulated when needed)."""
        return cls(config, sample_persons(config, _rng(config.seed, _TRAITS)))

    @classmethod
    def load(cls, workspace: Workspace) -> World:
        """The world that ``write`` saved under ``workspace.truth`` (exactly the same model and state)."""
        truth = workspace.truth
        missing = [f for f in TRUTH_FILES if not (truth / f).is_file()]
        if missing:
            raise WorkspaceError(f"no simulated world in {workspace.root} (missing truth/{missing[0]}): "
                                 "run `decisioning simulate` first")
        config = load_config(WorldConfig, truth / "world.yaml")
        persons = pd.read_parquet(truth / "persons.parquet")
        state = _read_state(truth / "contact_state.parquet", config)
        if len(persons) != config.customers or len(state) != config.customers:
            raise WorkspaceError(f"{truth}: persons/contact state do not match world.yaml ({config.customers})")
        return cls(config, persons, state)

    def _segments(self) -> np.ndarray:
        n = self.traits.n
        out = np.zeros((len(self.config.shifts), n), bool)
        tz = self.persons["timezone"].to_numpy(object)
        city = self.traits.city
        for j, s in enumerate(self.config.shifts):
            m = np.ones(n, bool)
            if s.timezone is not None:
                m &= tz == s.timezone
            if s.city is not None:
                m &= city == s.city
            out[j] = m & (_rng(self.config.seed, _SEGMENTS, j).random(n) < s.share)
        return out

    @property
    def identities(self) -> Identities:
        if self._ids is None:
            self._ids = make_identities(self.traits, self.config, _rng(self.config.seed, _IDENTITY))
        return self._ids

    @property
    def n_persons(self) -> int:
        return self.traits.n

    # -- the response function -------------------------------------------------------------
    def initial_state(self) -> ContactState:
        """Contact state at history_end, from the history's sends (a fresh copy each call)."""
        if self._initial_state is None:
            self._run_history(lambda h, k: None)
        return self._initial_state.copy()

    def true_probabilities(self, actions: ActionBatch, state: ContactState) -> ResponseProbabilities:
        """The exact outcome probabilities of ``actions`` given ``state`` (state is not changed)."""
        self._check(actions, state)
        return self.model.probabilities(actions, state)

    def respond(self, actions: ActionBatch, state: ContactState, rng: np.random.Generator) -> Outcomes:
        """Sample outcomes of ``actions`` from ``true_probabilities`` and record the contacts and
        unsubscribes in ``state`` (rows of one batch are simultaneous)."""
        self._check(actions, state)
        if not isinstance(rng, np.random.Generator):
            raise InputError(f"rng must be a numpy Generator; got {type(rng).__name__}")
        return self.model.sample(actions, state, rng)

    def organic_purchase_probability(self, start, end, person_id: np.ndarray | None = None) -> np.ndarray:
        """P(at least one organic purchase in [start, end)) per person (no campaign), from the
        truth: the oracle of a purchase-propensity model. Returns (n,) float64."""
        p = np.arange(self.n_persons) if person_id is None else np.asarray(person_id, dtype=np.int64)
        a = np.full(len(p), pd.Timestamp(start).value if pd.Timestamp(start).tzinfo else
                    pd.Timestamp(start, tz="UTC").value, dtype=np.int64)
        b = np.full(len(p), pd.Timestamp(end).value if pd.Timestamp(end).tzinfo else
                    pd.Timestamp(end, tz="UTC").value, dtype=np.int64)
        return self.model.organic_probability(p, a, b)

    def _check(self, actions: ActionBatch, state: ContactState) -> None:
        check_actions(actions, self.n_persons, len(self.catalog.offers))
        if not isinstance(state, ContactState) or len(state) != self.n_persons:
            raise InputError(f"state must be this world's ContactState over {self.n_persons} persons")

    # -- history ---------------------------------------------------------------------------
    def _run_history(self, sink, progress=None) -> ContactState:
        """Simulate the history chunk by chunk, passing each chunk to ``sink(history, k)``."""
        state = ContactState.empty(self.n_persons, self.config.response.fatigue_half_life_days)
        gen = HistoryGenerator(self.config, self.traits, self.model, self.identities)
        n = self.n_persons
        chunks = range(0, n, CHUNK_PERSONS)
        for k, lo in enumerate(chunks):
            persons = np.arange(lo, min(n, lo + CHUNK_PERSONS), dtype=np.int64)
            h = gen.chunk(_rng(self.config.seed, _HISTORY, k), persons, state)
            sink(h, k)
            if progress is not None:
                progress(f"history: persons {persons[-1] + 1:,}/{n:,}")
        if self._initial_state is None:
            self._initial_state = state.copy()
        return state

    def history(self) -> History:
        """The whole history in memory as truth-level tables (for tests and studies; a 100k world
        holds a few million rows)."""
        parts: list[ChunkHistory] = []
        self._run_history(lambda h, k: parts.append(h))

        def cat(name):
            return np.concatenate([getattr(h, name) for h in parts])

        def ts(name, censor=False):
            x = cat(name).copy()
            if censor:
                x[x >= self.end_ns] = NAT
            return pd.to_datetime(x.view("datetime64[ns]"), utc=True)

        def names(values, codes):
            codes = np.asarray(codes)
            out = np.asarray(values, dtype=object)[np.maximum(codes, 0)]
            out[codes < 0] = None
            return out

        offers = self.catalog.ids
        orders = pd.DataFrame({
            "person_id": cat("o_person"), "ordered_at": ts("o_time"), "gross": cat("o_gross"),
            "category": names(CATEGORIES, cat("o_cat")), "quantity": cat("o_qty"),
            "offer": names(offers, cat("o_offer")), "campaign": cat("o_campaign")})
        events = pd.DataFrame({
            "person_id": cat("e_person"), "occurred_at": ts("e_time"),
            "event_type": names(EVENT_TYPES, cat("e_type")), "platform": names(PLATFORMS, cat("e_platform")),
            "category": names(CATEGORIES, cat("e_cat"))})
        sends = pd.DataFrame({
            "person_id": cat("s_person"), "decided_at": ts("s_decided"), "sent_at": ts("s_send"),
            "channel": names([c.value for c in CHANNELS], cat("s_channel")), "channel_code": cat("s_channel"),
            "offer": names(offers, cat("s_offer")), "offer_code": cat("s_offer"), "hour": cat("s_hour"),
            "propensity": cat("s_propensity"),
            **{f"{k}_at": ts(f"s_{k}", censor=True) for k in ("delivered", "opened", "clicked", "converted",
                                                              "unsubscribed")},
            "value": cat("s_value")})
        return History(orders=orders, events=events, sends=sends)

    # -- files -----------------------------------------------------------------------------
    def write(self, workspace: Workspace, fmt: str = "parquet", progress=None) -> SimulationSummary:
        """Simulate the history and write raw/<source>.<fmt> and truth/ into ``workspace``."""
        if fmt not in ("parquet", "csv"):
            raise InputError(f"format must be 'parquet' or 'csv'; got {fmt!r}")
        t0 = time.perf_counter()
        raw, truth = workspace.raw, workspace.truth
        try:
            for d in (raw, truth):
                d.mkdir(parents=True, exist_ok=True)
            for src in SOURCE_NAMES:
                for ext in ("parquet", "csv"):
                    (raw / f"{src}.{ext}").unlink(missing_ok=True)
            for f in TRUTH_FILES:
                (truth / f).unlink(missing_ok=True)
            probe = truth / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise WorkspaceError(f"cannot write to workspace {workspace.root}: {exc.strerror or exc}") from None

        writer = RawWriter(raw, truth, fmt, self, self.identities)
        try:
            state = self._run_history(lambda h, k: writer.write_chunk(h, _rng(self.config.seed, _EXPORT, k)),
                                      progress)
            writer.write_customers(_rng(self.config.seed, _CUSTOMERS), state)
        finally:
            writer.close()
        pq.write_table(pa.Table.from_pandas(self.persons, preserve_index=False), truth / "persons.parquet")
        _write_state(self._initial_state, truth / "contact_state.parquet")
        dump_config(self.config, truth / "world.yaml")
        return SimulationSummary(
            customers=self.n_persons, days=self.config.days, seed=self.config.seed, format=fmt,
            history_start=self.history_start.isoformat(), history_end=self.history_end.isoformat(),
            rows=dict(writer.rows), malformed=dict(writer.malformed),
            seconds=round(time.perf_counter() - t0, 3), peak_memory_mb=round(peak_rss_mb(), 1),
            workspace=str(workspace.root),
            raw_files={s: str(writer.path(s)) for s in SOURCE_NAMES},
            truth_files={f.split(".")[0]: str(truth / f) for f in TRUTH_FILES},
        )


def _write_state(state: ContactState, path: Path) -> None:
    cols: dict[str, object] = {
        "person_id": np.arange(len(state), dtype=np.int64),
        "fatigue": state.fatigue,
        "fatigue_at": state.fatigue_at,
    }
    for j, c in enumerate(CH):
        cols[f"unsubscribed_{c}"] = state.unsubscribed[:, j]
        cols[f"unsubscribed_at_{c}"] = state.unsubscribed_at[:, j]
        cols[f"last_sent_at_{c}"] = state.last_sent_at[:, j]
        cols[f"sends_{c}"] = state.sends[:, j]
    table = pa.table({k: pa.array(v) for k, v in cols.items()})
    pq.write_table(table, path)


def _read_state(path: Path, config: WorldConfig) -> ContactState:
    t = pq.read_table(path)

    def ns(name):
        return t.column(name).to_numpy(zero_copy_only=False).astype("datetime64[ns]")

    def stack(prefix, conv):
        return np.stack([conv(f"{prefix}_{c}") for c in CH], axis=1)

    def plain(name):
        return t.column(name).to_numpy(zero_copy_only=False)

    return ContactState(
        fatigue=plain("fatigue").astype(np.float64),
        fatigue_at=ns("fatigue_at"),
        unsubscribed=stack("unsubscribed", plain).astype(bool),
        unsubscribed_at=stack("unsubscribed_at", ns),
        last_sent_at=stack("last_sent_at", ns),
        sends=stack("sends", plain).astype(np.int32),
        half_life_days=config.response.fatigue_half_life_days,
    )
