"""The action space: every (channel, offer, local send slot) combination, plus no-send.

Arm ids are strings, stable across runs and readable in logs: ``"no_send"`` and
``"<channel>|<offer>|<hour>"``, e.g. ``"email|pct10|10"``. Arm 0 is always no-send. Everything
else works on integer arm indices and the vectorised attribute arrays of :class:`ArmSpace`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.catalog import DEFAULT_CATALOG, Catalog
from core.errors import InputError
from core.types import CHANNELS, NO_SEND, Channel

NO_SEND_INDEX = 0


@dataclass(frozen=True, eq=False)
class ArmSpace:
    """Arms over ``channels`` x ``offers`` x ``slots``, plus no-send at index 0.

    Vectorised attributes, all (K,):
      ``channel``: int8 index into core.types.CHANNELS, -1 for no-send;
      ``offer``: int8 index into ``catalog.offers``, -1 for no-send;
      ``slot``: int8 local send hour, -1 for no-send;
      ``channel_level`` / ``offer_level`` / ``slot_level``: position in this space's own
      ``channels`` / ``offers`` / ``slots`` tuples, -1 for no-send (the reward model's factors).
    """

    channels: tuple[Channel, ...]
    offers: tuple[str, ...]
    slots: tuple[int, ...]
    catalog: Catalog = DEFAULT_CATALOG
    ids: tuple[str, ...] = field(init=False)
    channel: np.ndarray = field(init=False, repr=False)
    offer: np.ndarray = field(init=False, repr=False)
    slot: np.ndarray = field(init=False, repr=False)
    channel_level: np.ndarray = field(init=False, repr=False)
    offer_level: np.ndarray = field(init=False, repr=False)
    slot_level: np.ndarray = field(init=False, repr=False)
    _index: dict[str, int] = field(init=False, repr=False)
    _is_send: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.channels or not self.offers or not self.slots:
            raise InputError("an arm space needs at least one channel, one offer and one send slot")
        unknown = [o for o in self.offers if o not in self.catalog.ids]
        if unknown:
            raise InputError(f"offers {unknown} are not in the catalog {list(self.catalog.ids)}")
        bad = [h for h in self.slots if not 0 <= int(h) <= 23]
        if bad:
            raise InputError(f"send slots are local hours 0-23; got {bad}")
        ids = [NO_SEND]
        ch, of, sl, chl, ofl, sll = [-1], [-1], [-1], [-1], [-1], [-1]
        for ci, c in enumerate(self.channels):
            for oi, o in enumerate(self.offers):
                for si, h in enumerate(self.slots):
                    ids.append(f"{Channel(c).value}|{o}|{int(h)}")
                    ch.append(CHANNELS.index(Channel(c)))
                    of.append(self.catalog.code(o))
                    sl.append(int(h))
                    chl.append(ci)
                    ofl.append(oi)
                    sll.append(si)
        set_ = object.__setattr__
        set_(self, "ids", tuple(ids))
        for name, values in (("channel", ch), ("offer", of), ("slot", sl),
                             ("channel_level", chl), ("offer_level", ofl), ("slot_level", sll)):
            arr = np.asarray(values, dtype=np.int8)
            arr.flags.writeable = False
            set_(self, name, arr)
        set_(self, "_index", {a: i for i, a in enumerate(ids)})
        is_send = self.channel >= 0
        is_send.flags.writeable = False
        set_(self, "_is_send", is_send)

    @classmethod
    def build(
        cls,
        catalog: Catalog = DEFAULT_CATALOG,
        channels: Sequence[Channel | str] | None = None,
        offers: Sequence[str] | None = None,
        slots: Sequence[int] | None = None,
    ) -> ArmSpace:
        """An arm space over the given channels, offers (default: the whole catalog) and slots."""
        from policies.config import DEFAULT_SLOTS

        return cls(
            channels=tuple(Channel(c) for c in (channels or CHANNELS)),
            offers=tuple(offers or catalog.ids),
            slots=tuple(sorted(int(h) for h in (slots or DEFAULT_SLOTS))),
            catalog=catalog,
        )

    @classmethod
    def from_config(cls, config, catalog: Catalog = DEFAULT_CATALOG) -> ArmSpace:
        """From a ``policies.config.ArmsConfig``."""
        return cls.build(catalog, config.channels, config.offers, config.send_slots)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_arms(self) -> int:
        return len(self.ids)

    @property
    def is_send(self) -> np.ndarray:
        """(K,) bool: the arm sends a message (computed once; read-only, copy it to modify)."""
        return self._is_send

    def index(self, arm_ids: Sequence[str] | str) -> np.ndarray | int:
        """Index of one arm id, or (n,) int64 indices of a sequence of them."""
        if isinstance(arm_ids, str):
            try:
                return self._index[arm_ids]
            except KeyError:
                raise InputError(f"unknown arm {arm_ids!r}; arms look like 'no_send' or 'email|pct10|10'") from None
        out = np.fromiter((self._index.get(a, -1) for a in arm_ids), dtype=np.int64, count=len(arm_ids))
        if (out < 0).any():
            bad = sorted({a for a, i in zip(arm_ids, out, strict=True) if i < 0})[:5]
            raise InputError(f"unknown arms {bad}; arms look like 'no_send' or 'email|pct10|10'")
        return out

    def index_of_levels(self, channel_level: np.ndarray, offer_level: np.ndarray,
                        slot_level: np.ndarray) -> np.ndarray:
        """(n,) arm indices of send arms given their levels in this space's channels, offers and
        slots (vectorised inverse of ``channel_level`` / ``offer_level`` / ``slot_level``)."""
        cl, ol, sl = (np.asarray(x, dtype=np.int64) for x in (channel_level, offer_level, slot_level))
        no, ns = len(self.offers), len(self.slots)
        return 1 + (cl * no + ol) * ns + sl

    def id_array(self) -> np.ndarray:
        """(K,) object array of arm ids (index with arm indices to get ids)."""
        return np.asarray(self.ids, dtype=object)

    def arm(self, channel: Channel | str, offer: str, slot: int) -> int:
        """Index of the arm (channel, offer, slot)."""
        return self.index(f"{Channel(channel).value}|{offer}|{int(slot)}")

    def arms_where(self, channel: Channel | str | None = None, offer: str | None = None,
                   slot: int | None = None) -> np.ndarray:
        """(K,) bool: send arms matching every given attribute."""
        m = self.is_send.copy()
        if channel is not None:
            m &= self.channel == CHANNELS.index(Channel(channel))
        if offer is not None:
            m &= self.offer == self.catalog.code(offer)
        if slot is not None:
            m &= self.slot == int(slot)
        return m

    def __getstate__(self) -> dict:
        return {"channels": self.channels, "offers": self.offers, "slots": self.slots, "catalog": self.catalog}

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        self.__post_init__()

    def same_as(self, other: ArmSpace) -> bool:
        return self.ids == other.ids and self.catalog == other.catalog
