"""The settings of the byte-bounded DAG cache, read from Airflow's configuration.

Every option is read with ``airflow.configuration.conf``, so ``airflow.cfg`` and the
``AIRFLOW__<SECTION>__<KEY>`` environment variables both work. A value that cannot be used raises
:class:`DagCacheConfigError` whose message is one line naming the option and the value; the
scheduler and the API server turn it into a refusal to start (never a silent fallback).

Installing the package changes nothing by itself: a component uses bytecache only once its
``dag_cache_max_bytes`` is set (``0`` = no byte cap); ``dag_cache_policy = airflow`` is the explicit off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bytecache import DEFAULT_POLICY, POLICIES, format_size, parse_size

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MIN_BARE_MAX_BYTES",
    "DEFAULT_TTL",
    "DEFAULT_POLICY",
    "AIRFLOW_POLICY",
    "DagCacheConfigError",
    "DagCacheSettings",
    "parse_max_bytes",
    "parse_ttl",
    "parse_policy",
    "parse_gc_freeze",
    "read_scheduler_settings",
    "read_api_settings",
]

#: Default byte budget of a ByteBoundedDagBag built without one (the settings have no default:
#: setting ``dag_cache_max_bytes`` is what turns bytecache on). Airflow's own cap is 512 entries; for
#: the ~100-task DAGs of a typical deployment (~0.45 MB deserialized each) that is ~230 MB, and for
#: 1,000-task DAGs (~4 MB) about 2 GB. 512 MiB holds the 512 typical entries with room to spare
#: and bounds the big-DAG case to a quarter of it.
DEFAULT_MAX_BYTES = 512 * 1024**2
#: A budget given as a bare number must be at least this: one 1,000-task DAG weighs ~4 MB, so a
#: smaller cache holds next to nothing, and a bare ``512`` is most likely Airflow's 512 *entries*.
#: An explicit unit (``512B``, ``8MiB``) says the small number is meant and is accepted.
MIN_BARE_MAX_BYTES = 16 * 1024**2
#: Default idle TTL (seconds). Must exceed the scheduler's sweep period (the time it takes to
#: visit every running run once: runs / [scheduler] max_dagruns_per_loop_to_schedule loops), so
#: active versions never expire between visits; superseded versions leave within one hour.
DEFAULT_TTL = 3600.0
#: ``[scheduler] dag_cache_policy = airflow`` switches the integration off for the scheduler and
#: leaves Airflow's own 512-entry LRU in place.
AIRFLOW_POLICY = "airflow"


class DagCacheConfigError(ValueError):
    """A DAG-cache option has a value we cannot use; the message is one line."""


@dataclass(frozen=True)
class DagCacheSettings:
    section: str
    max_bytes: int | None  # None: no byte cap (configured as 0)
    ttl: float | None  # None: no idle expiry (configured as 0)
    policy: str  # a bytecache policy name, or AIRFLOW_POLICY
    opted_in: bool = True  # dag_cache_max_bytes is set
    gc_freeze: bool = False  # the cache's collections freeze the survivors (bytecache_airflow.freezing)

    @property
    def enabled(self) -> bool:
        return self.opted_in and self.policy != AIRFLOW_POLICY

    def describe(self) -> str:
        budget = "no byte cap" if self.max_bytes is None else f"{format_size(self.max_bytes)} ({self.max_bytes} bytes)"
        ttl = "off" if self.ttl is None else f"{self.ttl:g}s"
        return f"budget={budget}, ttl={ttl}, policy={self.policy}, gc_freeze={'on' if self.gc_freeze else 'off'}"

    def why_not_enabled(self) -> str:
        """The one log line a component writes when it keeps Airflow's own cache."""
        option = _option(self.section, "dag_cache_max_bytes")
        if not self.opted_in:
            return (
                f"bytecache: installed but not enabled for the {_COMPONENT[self.section]}; using Airflow's own "
                f"DAG cache. To enable it set {option} (e.g. 512MiB, or 0 for no byte cap)"
            )
        return (
            f"bytecache: {_option(self.section, 'dag_cache_policy')} = airflow; using Airflow's own DAG cache "
            f"for the {_COMPONENT[self.section]}"
        )


_COMPONENT = {"scheduler": "scheduler", "api": "API server"}


def _option(section: str, key: str) -> str:
    return f"[{section}] {key}"


def parse_max_bytes(value: object, *, section: str = "scheduler", key: str = "dag_cache_max_bytes") -> int | None:
    """``"512MiB"``, ``"2GB"``, ``"4096"`` -> bytes; ``0`` -> None (no byte cap)."""
    name = _option(section, key)
    text = value.strip() if isinstance(value, str) else value
    try:
        nbytes = parse_size(text, name=name, allow_zero=True)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise DagCacheConfigError(
            f"{name} = {value!r} is not a valid size: use a whole number of bytes >= 0 with an "
            f"optional unit such as 512MiB, 2GB or 4096 (0 = no byte cap)"
        ) from None
    bare = isinstance(text, int) or (isinstance(text, str) and text.isdigit())
    if bare and 0 < nbytes < MIN_BARE_MAX_BYTES:
        raise DagCacheConfigError(
            f"{name} = {value!r} is below {format_size(MIN_BARE_MAX_BYTES)}: it is a budget in bytes, "
            f"not a number of DAGs like Airflow's 512-entry cache, and {nbytes} bytes cannot hold a "
            f"typical DAG; give a unit such as 512MiB (or {nbytes}B if you mean bytes)"
        )
    return nbytes or None


def parse_ttl(value: object, *, section: str = "scheduler", key: str = "dag_cache_ttl") -> float | None:
    """Idle seconds as a number >= 0; ``0`` -> None (no idle expiry)."""
    name = _option(section, key)
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError
    except (ValueError, TypeError):
        raise DagCacheConfigError(
            f"{name} = {value!r} is not a valid TTL: use a number of seconds >= 0 (0 = no idle expiry)"
        ) from None
    return seconds or None


def parse_policy(value: object, *, section: str = "scheduler", key: str = "dag_cache_policy") -> str:
    name = _option(section, key)
    choices = sorted(POLICIES) + [AIRFLOW_POLICY]
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in choices:
        raise DagCacheConfigError(f"{name} = {value!r} is not a valid policy: use one of {', '.join(choices)}")
    return text  # type: ignore[return-value]


_TRUE, _FALSE = ("true", "t", "yes", "y", "on", "1"), ("false", "f", "no", "n", "off", "0")


def parse_gc_freeze(value: object, *, section: str = "scheduler", key: str = "dag_cache_gc_freeze") -> bool:
    """A boolean as Airflow spells them (True/False, yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DagCacheConfigError(f"{_option(section, key)} = {value!r} is not a boolean: use True or False")


def _get(section: str, key: str, default: object) -> object:
    from airflow.configuration import conf

    value = conf.get(section, key, fallback=None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return value


def read_scheduler_settings() -> DagCacheSettings:
    """``[scheduler] dag_cache_max_bytes``, ``dag_cache_ttl``, ``dag_cache_policy``, ``dag_cache_gc_freeze``.

    Every option that is set is validated, also when bytecache stays off (a typo is reported,
    not ignored); ``opted_in`` says whether ``dag_cache_max_bytes`` is set.
    """
    return _read("scheduler", ttl_default=DEFAULT_TTL)


def read_api_settings() -> DagCacheSettings:
    """``[api] dag_cache_max_bytes``, ``dag_cache_policy`` and ``dag_cache_gc_freeze``; ``opted_in`` as for the scheduler.

    The TTL is Airflow's own ``[api] dag_cache_ttl`` (default 3600).
    """
    return _read("api", ttl_default=3600)


def _read(section: str, *, ttl_default: float) -> DagCacheSettings:
    raw = _get(section, "dag_cache_max_bytes", None)
    return DagCacheSettings(
        section=section,
        max_bytes=parse_max_bytes(DEFAULT_MAX_BYTES if raw is None else raw, section=section),
        ttl=parse_ttl(_get(section, "dag_cache_ttl", ttl_default), section=section),
        policy=parse_policy(_get(section, "dag_cache_policy", DEFAULT_POLICY), section=section),
        opted_in=raw is not None,
        gc_freeze=parse_gc_freeze(_get(section, "dag_cache_gc_freeze", False), section=section),
    )
