"""The search space of a sweep: rows of ``configs/hparams_search/<name>.yaml`` (keyed by config keys such as
``model.lr``), checked against the composed config and turned into Ray Tune domains (Table S1)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

DRIVER_ONLY_KEYS = ("tune", "ray", "hparams_search")


class TuneConfigError(ValueError):
    """A search space, sweep setting or Ray address that cannot work (one line naming the problem)."""


# -- search space --------------------------------------------------------------------------------------------------
_FIELDS = {
    "choice": ("values",),
    "uniform": ("lower", "upper"),
    "loguniform": ("lower", "upper"),
    "quniform": ("lower", "upper", "q"),
    "qloguniform": ("lower", "upper", "q"),
    "randint": ("lower", "upper"),
    "pow10_randint": ("lower", "upper"),
}


@dataclass(frozen=True)
class Hyperparameter:
    """One row of a search space: the config key it sets and its distribution."""

    name: str
    distribution: str
    lower: float | None = None
    upper: float | None = None
    q: float | None = None
    values: tuple = ()
    default: Any = None

    @property
    def log_scale(self) -> bool:
        """Sampled across orders of magnitude (plot and importance use log10 of the value)."""
        return self.distribution in ("loguniform", "qloguniform", "pow10_randint")

    @property
    def categorical(self) -> bool:
        return self.distribution == "choice"

    def domain(self):
        """The Ray Tune domain of this row."""
        from ray import tune

        d = self.distribution
        if d == "choice":
            return tune.choice(list(self.values))
        if d == "uniform":
            return tune.uniform(self.lower, self.upper)
        if d == "loguniform":
            return tune.loguniform(self.lower, self.upper)
        if d == "quniform":
            return tune.quniform(self.lower, self.upper, self.q)
        if d == "qloguniform":
            return tune.qloguniform(self.lower, self.upper, self.q)
        if d == "randint":
            return tune.randint(int(self.lower), int(self.upper))
        # 10 ** randint(lower, upper), both ends included: the same law as a uniform choice over the powers
        return tune.choice(self.powers())

    def powers(self) -> list[float]:
        """pow10_randint's support: 10**lower ... 10**upper (exact decimal literals)."""
        return [float(f"1e{k}") for k in range(int(self.lower), int(self.upper) + 1)]

    def clean(self, value: Any) -> Any:
        """A sampled value as a plain Python value, a quantized float snapped to its grid (0.3, not 0.30000004)."""
        if hasattr(value, "item"):  # numpy scalar
            value = value.item()
        if self.q and isinstance(value, float):
            steps = round(value / self.q)
            decimals = max(0, -math.floor(math.log10(self.q))) + 6
            return round(steps * self.q, decimals)
        if self.distribution == "pow10_randint" and isinstance(value, (int, float)) and value > 0:
            k = math.log10(value)
            # a drawn power of ten, exact; any other value (the shipped 5e-6 of Table S1's defaults) is kept
            return float(f"1e{round(k)}") if abs(k - round(k)) < 1e-6 else float(value)
        return value

    def contains(self, value: Any, tol: float = 1e-9) -> bool:
        """Whether ``value`` could have been drawn from this row (range, grid and list membership)."""
        if self.categorical:  # True is not 1 here: a bool row takes bools, a numeric row numbers
            return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.distribution == "pow10_randint":
            if value <= 0:
                return False
            k = math.log10(value)
            return abs(k - round(k)) < 1e-9 and self.lower <= round(k) <= self.upper
        scale = max(abs(self.lower), abs(self.upper), 1.0)
        if not (self.lower - tol * scale <= value <= self.upper + tol * scale):
            return False
        if self.distribution == "randint":
            return float(value).is_integer() and value < self.upper
        if self.q:
            steps = value / self.q
            return abs(steps - round(steps)) < 1e-6
        return True


def _row(name: str, row: Mapping[str, Any], source: str) -> Hyperparameter:
    dist = row.get("distribution")
    if dist not in _FIELDS:
        raise TuneConfigError(f"{source}: hyperparameter '{name}' has distribution {dist!r}; "
                              f"expected one of {sorted(_FIELDS)}")
    needed = _FIELDS[dist]
    missing = [f for f in needed if row.get(f) is None]
    unknown = sorted(set(row) - set(needed) - {"distribution", "default"})
    if missing or unknown:
        what = f"missing {missing}" if missing else f"unknown fields {unknown}"
        raise TuneConfigError(f"{source}: hyperparameter '{name}' ({dist}) has {what}; "
                              f"{dist} takes {list(needed)} (+ default)")
    if dist == "choice":
        values = row["values"]
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
            raise TuneConfigError(f"{source}: hyperparameter '{name}' needs a non-empty list of values")
        return Hyperparameter(name, dist, values=tuple(values), default=row.get("default"))
    lower, upper, q = row["lower"], row["upper"], row.get("q")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lower, upper)):
        raise TuneConfigError(f"{source}: hyperparameter '{name}' needs numeric lower/upper, got {lower!r}, {upper!r}")
    if not lower < upper:
        raise TuneConfigError(f"{source}: hyperparameter '{name}' needs lower < upper, got {lower} and {upper}")
    if dist in ("loguniform", "qloguniform") and lower <= 0:
        raise TuneConfigError(f"{source}: hyperparameter '{name}' is log-uniform, so lower must be > 0 (got {lower})")
    if dist in ("randint", "pow10_randint") and not (float(lower).is_integer() and float(upper).is_integer()):
        raise TuneConfigError(f"{source}: hyperparameter '{name}' ({dist}) needs integer bounds, got {lower}, {upper}")
    if q is not None and not (isinstance(q, (int, float)) and q > 0):
        raise TuneConfigError(f"{source}: hyperparameter '{name}' needs a quantum q > 0, got {q!r}")
    return Hyperparameter(name, dist, lower=float(lower), upper=float(upper), q=None if q is None else float(q),
                          default=row.get("default"))


def _flatten(node: Mapping[str, Any], prefix: str, source: str) -> dict[str, Mapping[str, Any]]:
    rows: dict[str, Mapping[str, Any]] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if not isinstance(value, Mapping):
            raise TuneConfigError(f"{source}: '{name}' must be a mapping with a 'distribution' "
                                  f"(e.g. {{distribution: choice, values: [1, 2]}}), got {value!r}")
        if "distribution" in value:
            rows[name] = value
        else:
            rows.update(_flatten(value, f"{name}.", source))
    return rows


def _check_key(cfg: DictConfig, name: str, source: str) -> None:
    """``name`` must be an existing value (not a section) of the composed config."""
    node: Any = cfg
    parts = name.split(".")
    for i, part in enumerate(parts):
        parent = ".".join(parts[:i]) or "the config root"
        if not isinstance(node, DictConfig) or part not in node:
            known = ", ".join(sorted(str(k) for k in node.keys())) if isinstance(node, DictConfig) else ""
            raise TuneConfigError(f"unknown hyperparameter '{name}' in {source}: {parent} has no key '{part}'"
                                  + (f" (it has: {known})" if known else ""))
        node = node._get_node(part)
    if isinstance(node, DictConfig):
        raise TuneConfigError(f"hyperparameter '{name}' in {source} names a config section, not a value")


def load_search_space(search: Mapping[str, Any] | DictConfig | None, cfg: DictConfig,
                      source: str = "hparams_search") -> dict[str, Hyperparameter]:
    """Rows of ``search.space`` (nested by config key) as Hyperparameters, each checked against ``cfg``."""
    if search is None:
        raise TuneConfigError("no search space: pass hparams_search=<name> (e.g. hparams_search=table_s1, "
                              "configs/hparams_search/table_s1.yaml)")
    if isinstance(search, DictConfig):
        search = OmegaConf.to_container(search, resolve=True)
    space = search.get("space") if isinstance(search, Mapping) else None
    if not isinstance(space, Mapping) or not space:
        raise TuneConfigError(f"{source}: expected a non-empty 'space:' mapping of hyperparameters")
    rows = _flatten(space, "", source)
    out = {}
    for name, row in rows.items():
        _check_key(cfg, name, source)
        out[name] = _row(name, row, source)
    return out


def param_space(space: Mapping[str, Hyperparameter]) -> dict[str, Any]:
    """Ray Tune's ``param_space``: flat, keyed by config key."""
    return {name: hp.domain() for name, hp in space.items()}


def current_values(cfg: DictConfig, space: Mapping[str, Hyperparameter]) -> dict[str, Any]:
    """The composed config's own value of every searched key: the sweep's "defaults" trial
    (``tune.include_default``), so a search can only match or improve on the configuration it started from. A value
    the space cannot draw (a budget an experiment lowered) is replaced by the row's ``default``, with a warning."""
    out = {}
    for name, hp in space.items():
        value = OmegaConf.select(cfg, name)
        if not hp.contains(value) and hp.default is not None and hp.contains(hp.default):
            log.warning("%s=%r lies outside its search space; the defaults trial uses the row's default %r",
                        name, value, hp.default)
            value = hp.default
        out[name] = value
    return out


def apply_params(cfg: DictConfig, params: Mapping[str, Any], space: Mapping[str, Hyperparameter]) -> DictConfig:
    """Set sampled values (cleaned onto their grids) on ``cfg`` in place; returns ``cfg``."""
    for name, value in params.items():
        if name not in space:
            continue
        OmegaConf.update(cfg, name, space[name].clean(value), merge=False, force_add=False)
    return cfg


# -- the trial -----------------------------------------------------------------------------------------------------
