"""Feast definitions of the customer features: one entity, one FileSource and FeatureView per
stored feature group of ``features.compute``, one OnDemandFeatureView for request-time features,
and one versioned FeatureService per model family (``features.services``).

Everything is derived from the feature catalogue, so the Feast schema and the pandas computation
cannot drift apart. Sources point at absolute Parquet paths in the workspace (Feast's DuckDB
offline store resolves relative paths against the working directory, not the repo).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from features.compute import (
    ENTITY,
    ON_DEMAND_INPUTS,
    REQUEST_TIME,
    TIMESTAMP,
    FeatureConfig,
    FeatureGroup,
    feature_groups,
)
from features.services import SERVICES, service_groups

ENTITY_NAME = "customer"
REQUEST_SOURCE = "request"
ON_DEMAND_VIEW = "request_features"


def _dtype(kind: str):
    from feast.types import Float64, Int64, String

    return {"int": Int64, "float": Float64, "str": String}[kind]


def _udf_source(config: FeatureConfig) -> str:
    """Source of the on-demand transformation. Feast stores it in the registry and rebuilds the
    function from it, so it only delegates to ``features.compute`` with the config baked in."""
    return (
        "def request_features(inputs):\n"
        "    from features.compute import config_from_json, on_demand_dict\n"
        f"    return on_demand_dict(inputs, config_from_json({config.model_dump_json()!r}))\n"
    )


def on_demand_udf(config: FeatureConfig):
    """The transformation function Feast runs (built from :func:`_udf_source`)."""
    namespace: dict = {}
    exec(_udf_source(config), namespace)  # noqa: S102 - our own source text
    return namespace["request_features"]


def build_definitions(data_dir: str | Path, config: FeatureConfig | None = None) -> list:
    """Feast objects for a feature-table folder (absolute paths). Order: entity, sources, views,
    on-demand view, services."""
    from feast import (
        Entity,
        FeatureService,
        FeatureView,
        Field,
        FileSource,
        OnDemandFeatureView,
        RequestSource,
    )
    from feast.types import Float64
    from feast.value_type import ValueType

    config = config or FeatureConfig()
    data_dir = Path(data_dir).resolve()
    customer = Entity(name=ENTITY_NAME, join_keys=[ENTITY], value_type=ValueType.STRING,
                      description="A unified customer (profiles.parquet customer_id).")
    groups: list[FeatureGroup] = list(feature_groups(config))
    sources, views = [], {}
    for g in groups:
        if g.on_demand:
            continue
        src = FileSource(name=f"{g.name}_source", path=str(data_dir / f"{g.name}.parquet"),
                         timestamp_field=TIMESTAMP, description=f"features.compute table {g.name}")
        sources.append(src)
        views[g.name] = FeatureView(
            name=g.name,
            entities=[customer],
            # rows are change points plus heartbeat repeats every `heartbeat_days`, so the latest row
            # at or before any time (up to the tables' valid_until) is never older than that: the
            # ttl only bounds how far back Feast's point-in-time join searches. The profile view has
            # one row per customer and no heartbeats: no ttl. (Feast does not apply ttl to online
            # reads of a FeatureView.)
            ttl=timedelta(days=config.heartbeat_days) if g.name != "customer_profile" else timedelta(0),
            schema=[Field(name=f.name, dtype=_dtype(f.dtype), description=f.description) for f in g.features],
            source=src,
            online=True,
            description=g.description,
        )
    request = RequestSource(name=REQUEST_SOURCE, schema=[Field(name=REQUEST_TIME, dtype=Float64,
                                                              description="request time, epoch seconds UTC")])
    needs: dict[str, list[str]] = {}
    for g in groups:
        for f in g.features:
            if f.name in ON_DEMAND_INPUTS and not g.on_demand:
                needs.setdefault(g.name, []).append(f.name)
    demand_group = next(g for g in groups if g.on_demand)
    odfv = OnDemandFeatureView(
        name=ON_DEMAND_VIEW,
        sources=[request, *(views[v][names] for v, names in needs.items())],
        # no descriptions here: Feast checks this schema against the one it infers, descriptions included
        schema=[Field(name=f.name, dtype=_dtype(f.dtype)) for f in demand_group.features],
        # python mode: plain lists in and out; Feast's pandas mode costs ~30 ms per online read
        mode="python",
        udf=on_demand_udf(config),
        udf_string=_udf_source(config),
        description=demand_group.description,
    )
    services = []
    for name, spec in SERVICES.items():
        parts = []
        for group, names in service_groups(name, config).items():
            parts.append((odfv if group == ON_DEMAND_VIEW else views[group])[names])
        services.append(FeatureService(name=name, features=parts, description=spec.description,
                                       tags={"family": spec.family}))
    return [customer, *sources, *views.values(), odfv, *services]
