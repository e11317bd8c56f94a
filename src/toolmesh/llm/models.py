"""The model registry (LLM-2): prices, context windows, capabilities and typical latency.

The data lives in ``models.yaml`` next to this module; users override it with
``$TOOLMESH_HOME/models.yaml``, an explicit file, or a config section, merged field by field.
An unknown model is never priced at zero: :meth:`ModelRegistry.price` logs one warning per
model name and returns ``Cost(usd=None, priced=False)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from toolmesh.errors import ConfigError
from toolmesh.llm.types import Usage

__all__ = ["CAPABILITIES", "Cost", "ModelInfo", "ModelRegistry", "Savings"]

log = logging.getLogger("toolmesh.llm.models")

#: Capabilities a model entry may declare.
CAPABILITIES = frozenset({"tools", "streaming", "reasoning", "vision"})

_MODEL_KEYS = frozenset(
    {"provider", "aliases", "price", "context_window", "max_output", "capabilities", "latency", "quality"}
)
_PRICE_KEYS = ("input", "output", "cached_input")
_LATENCY_KEYS = ("ttft_ms", "per_token_ms")
_PER_MILLION = 1_000_000.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model's data. Prices are USD per million tokens; ``None`` means unknown."""

    name: str
    provider: str
    aliases: tuple[str, ...] = ()
    input_price: float | None = None
    output_price: float | None = None
    cached_input_price: float | None = None
    context_window: int | None = None
    max_output: int | None = None
    capabilities: frozenset[str] = frozenset()
    ttft_ms: float | None = None
    per_token_ms: float | None = None
    quality: float = 0.0

    @property
    def priced(self) -> bool:
        """Both input and output prices are known."""
        return self.input_price is not None and self.output_price is not None

    def supports(self, capability: str) -> bool:
        """Whether the model declares ``capability`` (``tools``, ``streaming``, ...)."""
        return capability in self.capabilities

    def cost_usd(self, usage: Usage) -> float | None:
        """Cost of ``usage`` in USD, or ``None`` when unpriced.

        ``usage.cached_input_tokens`` is taken as a subset of ``input_tokens`` (the OpenAI
        convention) and billed at ``cached_input_price`` when known, else at the input price.
        Reasoning tokens are part of ``output_tokens``."""
        pin, pout = self.input_price, self.output_price
        if pin is None or pout is None:
            return None
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        pcached = self.cached_input_price if self.cached_input_price is not None else pin
        micro = (usage.input_tokens - cached) * pin + cached * pcached + usage.output_tokens * pout
        return micro / _PER_MILLION


@dataclass(frozen=True, slots=True)
class Cost:
    """The price of one usage record. ``priced=False`` (and ``usd=None``) for unknown models."""

    usd: float | None
    priced: bool
    model: str


@dataclass(frozen=True, slots=True)
class Savings:
    """What ``usage`` cost on ``model`` against what it would have cost on a reference model."""

    cost: Cost
    reference: Cost
    #: ``reference.usd - cost.usd``; ``None`` if either is unpriced.
    usd: float | None
    #: ``usd / reference.usd``; ``None`` if unpriced or the reference costs nothing.
    fraction: float | None


class ModelRegistry:
    """Model data by name, alias or provider-prefixed name (``"openai/gpt-4.1"``)."""

    def __init__(self, models: Mapping[str, ModelInfo] | None = None) -> None:
        self._models: dict[str, ModelInfo] = {}
        self._index: dict[str, ModelInfo | None] = {}
        self._warned: set[str] = set()
        for info in (models or {}).values():
            self.add(info)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> ModelRegistry:
        """The packaged data, merged with a user file and then with ``overrides``.

        The user file is ``path`` when given (it must exist), else
        ``$TOOLMESH_HOME/models.yaml`` (or ``~/.toolmesh/models.yaml``) if present.
        ``overrides`` is a config section: ``{"models": {...}}`` or the models mapping itself.
        Raises :class:`ConfigError` naming the offending key."""
        packaged = resources.files("toolmesh.llm").joinpath("models.yaml").read_text(encoding="utf-8")
        raw = _models_section(_parse(packaged, "models.yaml (packaged)"), "models.yaml (packaged)")
        user: Path | None
        if path is not None:
            user = Path(path)
            if not user.is_file():
                raise ConfigError(f"model file {str(path)!r} not found", key="models")
        else:
            user = Path(os.environ.get("TOOLMESH_HOME") or Path.home() / ".toolmesh") / "models.yaml"
            if not user.is_file():
                user = None
        layers: list[tuple[dict[str, Any], str]] = [(raw, "models.yaml (packaged)")]
        if user is not None:
            text = user.read_text(encoding="utf-8")
            layers.append((_models_section(_parse(text, str(user)), str(user)), str(user)))
        if overrides:
            layers.append((_models_section(dict(overrides), "config"), "config"))
        merged: dict[str, dict[str, Any]] = {}
        sources: dict[str, str] = {}
        for layer, source in layers:
            for name, entry in layer.items():
                if not isinstance(name, str) or not name:
                    raise ConfigError("model names must be non-empty strings", key=f"models.{name}", source=source)
                if entry is None:
                    entry = {}
                if not isinstance(entry, dict):
                    raise ConfigError("expected a mapping of model fields", key=f"models.{name}", source=source)
                merged[name] = _deep_merge(merged.get(name, {}), entry)
                sources[name] = source
        return cls({name: _build(name, entry, sources[name]) for name, entry in merged.items()})

    def add(self, info: ModelInfo) -> None:
        """Add or replace one model (and index its aliases)."""
        self._models[info.name] = info
        self._index = {}
        for m in self._models.values():
            for key in (m.name, *m.aliases):
                self._index[key.lower()] = m

    # -- lookup ----------------------------------------------------------------------------

    def get(self, name: str) -> ModelInfo | None:
        """The model for a name, alias or ``provider/name`` (any number of prefixes); ``None``
        if unknown. Case-insensitive."""
        index = self._index
        try:
            return index[name]
        except KeyError:
            pass
        found: ModelInfo | None = None
        key = name.lower()
        while True:
            found = index.get(key)
            if found is not None or "/" not in key:
                break
            key = key.split("/", 1)[1]
        if len(index) < 8192 + len(self._models) * 8:  # negative results cached too, bounded
            index[name] = found
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def names(self) -> list[str]:
        """Canonical model names."""
        return list(self._models)

    # -- prices ----------------------------------------------------------------------------

    def price(self, model: str, usage: Usage) -> Cost:
        """Cost of ``usage`` on ``model``. Unknown or unpriced model: one warning per model name
        and ``Cost(usd=None, priced=False)`` — never a silent zero."""
        info = self.get(model)
        if info is not None:
            usd = info.cost_usd(usage)
            if usd is not None:
                return Cost(usd, True, info.name)
        if model not in self._warned:
            if len(self._warned) >= 4096:  # bounded: model names can come from clients
                self._warned.clear()
            self._warned.add(model)
            why = "has no price" if info is not None else "is not in the model registry"
            log.warning("model %r %s: its usage is recorded as unpriced (add it to models.yaml)", model, why)
        return Cost(None, False, info.name if info is not None else model)

    def savings(self, usage: Usage, model: str, reference_model: str) -> Savings:
        """What running ``usage`` on ``model`` saved against ``reference_model``."""
        cost = self.price(model, usage)
        ref = self.price(reference_model, usage)
        if cost.usd is None or ref.usd is None:
            return Savings(cost, ref, None, None)
        diff = ref.usd - cost.usd
        return Savings(cost, ref, diff, diff / ref.usd if ref.usd > 0 else None)


# -- parsing and validation -----------------------------------------------------------------


def _parse(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {e.problem or e.context}", source=source) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {type(e).__name__}", source=source) from None


def _models_section(doc: Any, source: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError("expected a mapping with a 'models' key", key="models", source=source)
    if "models" in doc and isinstance(doc["models"], dict | None):
        extra = set(doc) - {"models", "version"}
        if extra:
            raise ConfigError(f"unknown top-level keys {sorted(extra)}", key=sorted(extra)[0], source=source)
        return dict(doc["models"] or {})
    return dict(doc)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _number(value: Any, key: str, source: str, *, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
            integer and not float(value).is_integer()):
        what = "a non-negative integer" if integer else "a non-negative number"
        raise ConfigError(f"expected {what}, got {value!r}", key=key, source=source)
    return int(value) if integer else float(value)


def _build(name: str, entry: dict[str, Any], source: str) -> ModelInfo:
    k = f"models.{name}"
    unknown = set(entry) - _MODEL_KEYS
    if unknown:
        bad = sorted(unknown)[0]
        raise ConfigError(f"unknown field (known: {', '.join(sorted(_MODEL_KEYS))})", key=f"{k}.{bad}", source=source)
    provider = entry.get("provider")
    if not isinstance(provider, str) or not provider:
        raise ConfigError("required: the provider family (openai, anthropic, local, ...)",
                          key=f"{k}.provider", source=source)
    aliases = entry.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError("expected a list of names", key=f"{k}.aliases", source=source)
    price = _sub(entry, "price", _PRICE_KEYS, k, source)
    latency = _sub(entry, "latency", _LATENCY_KEYS, k, source)
    caps = entry.get("capabilities") or []
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise ConfigError("expected a list", key=f"{k}.capabilities", source=source)
    bad_caps = set(caps) - CAPABILITIES
    if bad_caps:
        raise ConfigError(f"unknown capability {sorted(bad_caps)[0]!r} (known: {', '.join(sorted(CAPABILITIES))})",
                          key=f"{k}.capabilities", source=source)
    quality = _number(entry.get("quality"), f"{k}.quality", source)
    return ModelInfo(
        name=name,
        provider=provider,
        aliases=tuple(aliases),
        input_price=_number(price.get("input"), f"{k}.price.input", source),
        output_price=_number(price.get("output"), f"{k}.price.output", source),
        cached_input_price=_number(price.get("cached_input"), f"{k}.price.cached_input", source),
        context_window=_number(entry.get("context_window"), f"{k}.context_window", source, integer=True),
        max_output=_number(entry.get("max_output"), f"{k}.max_output", source, integer=True),
        capabilities=frozenset(caps),
        ttft_ms=_number(latency.get("ttft_ms"), f"{k}.latency.ttft_ms", source),
        per_token_ms=_number(latency.get("per_token_ms"), f"{k}.latency.per_token_ms", source),
        quality=quality if quality is not None else 0.0,
    )


def _sub(entry: dict[str, Any], field: str, keys: tuple[str, ...], k: str, source: str) -> dict[str, Any]:
    value = entry.get(field) or {}
    if not isinstance(value, dict):
        raise ConfigError("expected a mapping", key=f"{k}.{field}", source=source)
    unknown = set(value) - set(keys)
    if unknown:
        raise ConfigError(f"unknown field (known: {', '.join(keys)})", key=f"{k}.{field}.{sorted(unknown)[0]}",
                          source=source)
    return value
