"""The offer catalog: what a message can carry, and what it costs when it converts."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OfferKind(StrEnum):
    PERCENT_OFF = "percent_off"      # coupon: the customer pays (1 - discount) of the order
    FREE_SHIPPING = "free_shipping"  # fixed cost per converted order
    POINTS = "points"                # loyalty points worth ``discount`` of the order
    CONTENT = "content"              # no incentive: new arrivals, editorial


class Offer(BaseModel):
    """One offer of the catalog.

    ``discount`` is a share of the order value given away (0.2 = 20 % off); ``fixed_cost`` is a
    cost in currency units per converted order (free shipping). ``category`` restricts the offer
    to orders of one category (``None``: any category). ``inventory`` caps how many can be given
    (``None``: unlimited).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    kind: OfferKind
    discount: float = Field(0.0, ge=0.0, lt=1.0)
    fixed_cost: float = Field(0.0, ge=0.0)
    category: str | None = None
    inventory: int | None = Field(None, ge=0)

    def net_value(self, order_value: float) -> float:
        """Revenue left from an order of ``order_value`` once the offer is paid for."""
        return order_value * (1.0 - self.discount) - self.fixed_cost


class Catalog(BaseModel):
    """The offers a decision can choose from, in a fixed order (the order defines offer codes)."""

    model_config = ConfigDict(frozen=True)

    offers: tuple[Offer, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        ids = [o.id for o in self.offers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"offer ids must be unique; got {ids}")
        if not ids:
            raise ValueError("a catalog needs at least one offer")
        return self

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(o.id for o in self.offers)

    def __getitem__(self, offer_id: str) -> Offer:
        for o in self.offers:
            if o.id == offer_id:
                return o
        raise KeyError(offer_id)

    def code(self, offer_id: str) -> int:
        """Integer code of an offer (its position in the catalog)."""
        return self.ids.index(offer_id)


DEFAULT_CATALOG = Catalog(
    offers=(
        Offer(id="pct10", kind=OfferKind.PERCENT_OFF, discount=0.10),
        Offer(id="pct20", kind=OfferKind.PERCENT_OFF, discount=0.20),
        Offer(id="free_shipping", kind=OfferKind.FREE_SHIPPING, fixed_cost=6.0),
        Offer(id="points_2x", kind=OfferKind.POINTS, discount=0.04),
        Offer(id="new_arrivals", kind=OfferKind.CONTENT),
        Offer(id="beauty_15", kind=OfferKind.PERCENT_OFF, discount=0.15, category="beauty"),
    )
)
