"""The champion models, loaded by MLflow alias, kept fresh without a restart.

    champions = Champions(workspace, {"propensity": "propensity", ...}, alias="champion")
    champions.start(refresh_seconds=30)      # first load now, then poll the registry in a thread
    snap = champions.snapshot()              # an immutable view: models, versions, what is missing

A snapshot is swapped in as one reference assignment, so a request sees either the old set or the
new one, never a mix. When a reload fails (registry down, artifact unreadable) the old models
keep answering and the failure is remembered in ``last_error``. The estimators are our
scikit-learn-style objects with the native LightGBM Booster inside (``booster_``), not MLflow's
pyfunc wrapper (about 2.4x slower).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from core.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChampionSnapshot:
    """Models by family; ``versions`` the registry version of each; ``missing`` family -> why it
    is not loaded (``model_missing`` or ``registry_unavailable``)."""

    models: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    versions: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    missing: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    @property
    def complete(self) -> bool:
        return not self.missing


class Champions:
    """Loads ``families`` (family -> registered model name) at ``alias`` from the workspace's
    registry (or ``tracking_uri``) and polls for changes."""

    def __init__(self, workspace: Workspace, families: dict[str, str], alias: str = "champion",
                 tracking_uri: str | None = None, tracker_factory: Callable[[], Any] | None = None):
        self.workspace = workspace
        self.families = dict(families)
        self.alias = alias
        self.tracking_uri = tracking_uri
        self._tracker_factory = tracker_factory
        self._tracker = None
        self._snapshot = ChampionSnapshot(missing=MappingProxyType({f: "not loaded yet" for f in families}))
        self._lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.reloads = 0

    # -- loading ------------------------------------------------------------------------------
    def _tracker_or_none(self):
        if self._tracker is None:
            if self._tracker_factory is not None:
                self._tracker = self._tracker_factory()
            else:
                from training.tracking import Tracker

                self._tracker = Tracker(self.workspace, tracking_uri=self.tracking_uri)
        return self._tracker

    def refresh(self) -> bool:
        """Poll the registry; load every family whose alias moved. Returns True when the snapshot
        changed. Never raises: on failure the current snapshot stays and ``last_error`` says why."""
        from core.errors import DecisioningError

        with self._lock:
            old = self._snapshot
            models, versions, missing = dict(old.models), dict(old.versions), {}
            try:
                tracker = self._tracker_or_none()
            except Exception as exc:  # registry store unreachable or unreadable
                self._tracker = None
                self.last_error = f"registry unavailable: {type(exc).__name__}: {exc}"
                if not old.models:
                    self._snapshot = ChampionSnapshot(missing=MappingProxyType(
                        {f: "registry_unavailable" for f in self.families}))
                return False
            for family, name in self.families.items():
                try:
                    info = tracker.version(name, self.alias)
                except Exception as exc:
                    self.last_error = f"registry unavailable: {type(exc).__name__}: {exc}"
                    if family not in models:
                        missing[family] = "registry_unavailable"
                    continue
                if info is None:
                    if family not in models:
                        missing[family] = "model_missing"
                    continue
                if versions.get(family) == info.version and family in models:
                    continue
                try:
                    est = tracker.load_model(name, self.alias)
                except (DecisioningError, Exception) as exc:  # keep answering with the old one
                    self.last_error = f"cannot load {name}@{self.alias} v{info.version}: {exc}"
                    if family not in models:
                        missing[family] = "model_missing"
                    continue
                models[family] = est
                versions[family] = info.version
            new = ChampionSnapshot(MappingProxyType(models), MappingProxyType(versions), MappingProxyType(missing))
            changed = (dict(new.versions) != dict(old.versions)) or (dict(new.missing) != dict(old.missing))
            if changed:
                self._snapshot = new  # one reference assignment: atomic for readers
                self.reloads += 1
                log.info("champions now %s (missing %s)", dict(new.versions), dict(new.missing))
            return changed

    def snapshot(self) -> ChampionSnapshot:
        return self._snapshot

    # -- background polling ----------------------------------------------------------------------
    def start(self, refresh_seconds: float = 30.0) -> Champions:
        """Load now, then poll every ``refresh_seconds`` in a daemon thread (0: never)."""
        self.refresh()
        if refresh_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, args=(float(refresh_seconds),),
                                            name="champion-refresh", daemon=True)
            self._thread.start()
        return self

    def _poll(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.refresh()
            except Exception as exc:  # pragma: no cover - refresh already catches
                self.last_error = str(exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
