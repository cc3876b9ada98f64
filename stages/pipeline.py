"""The fused per-symbol stage chain: dedupe → validate → consolidate → bars → features →
score → risk.

All stages share the key (symbol), so they run in one process step with no topic hop, as in
Kafka Streams' fused sub-topologies; the outputs are still published on ``ticks.clean``,
``bars.m1``, ``features`` and ``trading.commands`` by the caller. The live agent, the offline
``tickstream process``, replay, training and the benchmarks all drive this class.

Exits on a tick: while a symbol has an open position with a stop, target or holding limit
(:attr:`SymbolState.watch`, one attribute check per tick when flat), every accepted tick
goes to :meth:`stages.risk.RiskManager.on_tick` with the consolidated best bid and ask,
after the bar that tick closed (if any) was decided; a CLOSE it makes joins
:attr:`Outputs.commands` like a bar's. With ``defer_decisions`` nothing is open in this
pipeline: the caller that decides the bars also replays each symbol's accepted ticks
(:attr:`PendingDecision.tick_pos` places a decision among them; ``offline.decide``).

Determinism: given the same ticks in the same order (and the same events and model), the
outputs are identical, including ``command_id``. The only wall-clock values are the
``processed_time_us``/``created_time_us`` stamps, supplied by the caller.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from schemas.records import Bar, CleanTick, FeatureVector, TradingCommand, clean_tick
from stages.bars import BarBuilder
from stages.config import RiskLimits, SymbolSpec
from stages.consolidate import Consolidator
from stages.context import ContextBook
from stages.dedupe import Deduplicator
from stages.features import FEATURE_SET, derive
from stages.indicators import IndicatorState
from stages.risk import RiskManager
from stages.score import Model, ModelStore
from stages.types import MINUTE_MS, UNKNOWN_SYMBOL, Reject, Tick
from stages.validate import ValidationRules, Validator

log = logging.getLogger(__name__)


class PipelineSettings(Protocol):
    """What :meth:`PipelineConfig.from_settings` reads (``topology.settings.Settings``)."""

    @property
    def symbols(self) -> Mapping[str, SymbolSpec]: ...
    @property
    def validation_level(self) -> str: ...
    @property
    def dedupe_window_ms(self) -> int: ...
    @property
    def broker_staleness_ms(self) -> int: ...
    @property
    def broker_priorities(self) -> Mapping[str, int]: ...
    @property
    def risk(self) -> RiskLimits: ...
    @property
    def model_allow_symbols(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    symbols: Mapping[str, SymbolSpec]
    validation_level: str = "advanced"
    dedupe_window_ms: int = 600_000
    staleness_ms: int = 5_000
    priorities: Mapping[str, int] = field(default_factory=dict)
    risk: RiskLimits = field(default_factory=RiskLimits)
    #: Symbols scored although the model's metadata does not list them (``*``: any).
    model_allow_symbols: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: PipelineSettings) -> PipelineConfig:
        return cls(
            symbols=settings.symbols,
            validation_level=settings.validation_level,
            dedupe_window_ms=settings.dedupe_window_ms,
            staleness_ms=settings.broker_staleness_ms,
            priorities=dict(settings.broker_priorities),
            risk=settings.risk,
            model_allow_symbols=frozenset(settings.model_allow_symbols),
        )


class PendingDecision(NamedTuple):
    """A scored bar's decision, left to the caller (:attr:`Pipeline.defer_decisions`).

    A tuple: it crosses process boundaries (pickled) also when this module is compiled."""

    symbol: str
    bar: Bar
    features: dict[str, Any]
    #: Where the decision falls among the accepted ticks: the index in
    #: :attr:`Outputs.clean` of the tick that closed the bar (the decision comes before
    #: that tick's exit check), or the list's length for a bar closed without a tick.
    tick_pos: int = -1


@dataclass(slots=True)
class Outputs:
    """What one or more input ticks produced; the caller drains and publishes it."""

    clean: list[CleanTick] = field(default_factory=list)
    rejects: list[tuple[Tick, Reject]] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    features: list[FeatureVector] = field(default_factory=list)
    commands: list[TradingCommand] = field(default_factory=list)
    decisions: list[PendingDecision] = field(default_factory=list)
    duplicates: int = 0

    def clear(self) -> None:
        self.clean.clear()
        self.rejects.clear()
        self.bars.clear()
        self.features.clear()
        self.commands.clear()
        self.decisions.clear()
        self.duplicates = 0


class SymbolState:
    """Every stage's state for one symbol: the value of the ``pipeline_state`` table."""

    __slots__ = ("bars", "consolidator", "dedupe", "indicators", "symbol", "validator",
                 "watch")

    def __init__(self, symbol: str, spec: SymbolSpec, config: PipelineConfig,
                 checkpointed: bool = True) -> None:
        self.symbol = symbol
        self.dedupe = Deduplicator(config.dedupe_window_ms, track_changes=checkpointed)
        self.validator = Validator(spec, ValidationRules.for_level(config.validation_level, spec))
        self.consolidator = Consolidator(symbol, config.staleness_ms, config.priorities)
        self.bars = BarBuilder(symbol)
        self.indicators = IndicatorState(symbol)
        #: An open position to check on each tick (kept by :class:`Pipeline` from its risk
        #: manager, not snapshotted: the risk state is).
        self.watch = False

    def snapshot(self, segmented: bool = False) -> dict[str, Any]:
        """All stage state; with ``segmented`` the dedupe window is left to
        :meth:`Deduplicator.take_changes` (only its meta is included)."""
        return {
            "symbol": self.symbol,
            "dedupe": self.dedupe.snapshot_meta() if segmented else self.dedupe.snapshot(),
            "validator": self.validator.snapshot(),
            "consolidator": self.consolidator.snapshot(),
            "bars": self.bars.snapshot(),
            "indicators": self.indicators.snapshot(),
        }

    @classmethod
    def restore(
        cls, data: Mapping[str, Any], spec: SymbolSpec, config: PipelineConfig,
        dedupe_segments: Mapping[int, list[Any] | None] | None = None,
    ) -> SymbolState:
        st = cls(str(data["symbol"]), spec, config)
        if data["dedupe"].get("segmented"):
            st.dedupe.restore_segmented(data["dedupe"], dict(dedupe_segments or {}))
        else:
            st.dedupe.restore(data["dedupe"])
        st.validator.restore(data["validator"])
        # Staleness and priorities are configuration: the settings win over the snapshot.
        st.consolidator = Consolidator.restore(
            data["consolidator"], staleness_ms=config.staleness_ms,
            priorities=config.priorities,
        )
        st.bars = BarBuilder.restore(data["bars"])
        st.indicators = IndicatorState.restore(data["indicators"])
        return st


def _opt(x: float | int | None) -> float | None:
    if x is None:
        return None
    f = float(x)
    return None if math.isnan(f) else f


class Pipeline:
    """The stage chain over every symbol a worker owns.

    With ``defer_decisions`` a scored bar is not decided here: it is appended to
    :attr:`Outputs.decisions` and the caller hands it to :meth:`decide`, in the order the
    bars were made. ``tickstream process --jobs N`` runs the per-symbol stages in N
    processes and decides every bar in one (the risk limits span symbols).
    """

    def __init__(
        self,
        config: PipelineConfig,
        models: ModelStore | None = None,
        context: ContextBook | None = None,
        clock_us: Callable[[], int] | None = None,
        defer_decisions: bool = False,
        checkpointed: bool = True,
    ) -> None:
        self.config = config
        self.defer_decisions = defer_decisions
        #: False for a run whose state is never checkpointed (``tickstream process``,
        #: ``replay``, ``backtest``): the dedupe window is then not kept a second time
        #: as the segments the worker persists (:meth:`Deduplicator.take_changes`).
        self.checkpointed = checkpointed
        self.models = models
        self.context = context if context is not None else ContextBook()
        self.risk = RiskManager(
            config.risk, {s: spec.pip_size for s, spec in config.symbols.items()}
        )
        self.states: dict[str, SymbolState] = {}
        self.kill_switch = False
        self.unknown_symbols = 0
        self._clock_us = clock_us or (lambda: 0)
        self._warned_no_model = False
        #: Bars a model saw but did not score: ``warmup`` (a feature it needs is missing,
        #: e.g. the indicators' first bars) and ``untrained_symbol`` (not in the symbols
        #: the model was trained on).
        self.not_scored: dict[str, int] = {"warmup": 0, "untrained_symbol": 0}
        self._warned_untrained: set[str] = set()
        self._allowed = config.model_allow_symbols

    # ---- state ---------------------------------------------------------------------
    def state(self, symbol: str) -> SymbolState | None:
        st = self.states.get(symbol)
        if st is None:
            spec = self.config.symbols.get(symbol)
            if spec is None:
                return None
            st = self.states[symbol] = SymbolState(symbol, spec, self.config,
                                                   self.checkpointed)
        return st

    def snapshot_symbol(self, symbol: str, segmented: bool = False) -> dict[str, Any]:
        """Everything the table keeps for ``symbol``: stage state plus its position."""
        st = self.states[symbol]
        return {"stages": st.snapshot(segmented), "risk": self.risk.snapshot_symbol(symbol)}

    def restore_symbol(
        self, symbol: str, data: Mapping[str, Any],
        dedupe_segments: Mapping[int, list[Any] | None] | None = None,
    ) -> None:
        spec = self.config.symbols[symbol]
        self.states[symbol] = SymbolState.restore(
            data["stages"], spec, self.config, dedupe_segments
        )
        self.risk.restore_symbol(symbol, data.get("risk"))
        self.states[symbol].watch = self.risk.watching(symbol)

    def forget_all(self) -> None:
        """Drop every symbol's stage state *and* its position (partitions revoked: another
        worker owns them now, and a symbol it owns must not count toward this worker's
        ``max_total_positions``). State comes back from the table when a symbol returns."""
        for symbol in self.risk.symbols():
            self.risk.drop_symbol(symbol)
        self.states.clear()

    # ---- the hot path --------------------------------------------------------------
    def on_tick(self, tick: Tick, out: Outputs, record_time_ms: int = 0) -> None:
        """Run one tick through every stage; what it produced is appended to ``out``.

        Order: the stateless checks first, so a bad tick (NaN or infinite price, a far-future
        or stale time) is rejected before it can enter the dedupe window or move any stage's
        clock; then dedupe; then the stateful checks and everything downstream.

        The future/stale checks use the collector's receive time; a tick without one is
        checked against ``record_time_ms`` (the Kafka record's timestamp, when the caller has
        it) or the pipeline's clock.
        """
        st = self.states.get(tick.symbol) or self.state(tick.symbol)
        if st is None:
            self.unknown_symbols += 1
            out.rejects.append(
                (tick, Reject(UNKNOWN_SYMBOL, f"{tick.symbol!r} is not in the symbol universe"))
            )
            return
        now_ms = tick.recv_time_us // 1000
        if now_ms <= 0:
            now_ms = record_time_ms if record_time_ms > 0 else self._clock_us() // 1000
        reject = st.validator.check(tick, now_ms)
        if reject is not None:
            out.rejects.append((tick, reject))
            st.consolidator.note_reject(tick.broker)
            return
        if st.dedupe.is_duplicate(tick):
            out.duplicates += 1
            st.consolidator.note_duplicate(tick.broker)
            return
        for t, rej in st.validator.process(tick, now_ms, True):
            if rej is not None:
                out.rejects.append((t, rej))
                st.consolidator.note_reject(t.broker)
            else:
                self._accept(st, t, out)

    def _accept(self, st: SymbolState, t: Tick, out: Outputs) -> None:
        c = st.consolidator.update(t)
        bid = t.bid
        ask = t.ask
        out.clean.append(clean_tick(  # CleanTick's fields in order, positionally
            t.broker, t.symbol, t.time_msc, t.recv_time_us, bid, ask, (bid + ask) * 0.5,
            ask - bid, c.best_bid, c.best_ask, c.best_bid_broker, c.best_ask_broker,
            c.fresh_brokers, c.dispersion, t.seq, self._clock_us(),
        ))
        bar = st.bars.add(
            t.time_msc, c.mid, c.best_bid, c.best_ask, c.spread, c.fresh_brokers,
            c.dispersion, t.recv_time_us,
        )
        if bar is not None:
            self.on_bar(st, bar, out, len(out.clean) - 1)
        if st.watch:
            self.exit_on_tick(st.symbol, t.time_msc, c.best_bid, c.best_ask,
                              t.recv_time_us, out)

    def exit_on_tick(self, symbol: str, time_msc: int, bid: float, ask: float,
                     recv_time_us: int, out: Outputs) -> None:
        """Check an open position of ``symbol`` against one accepted tick (module doc)."""
        cmd = self.risk.on_tick(
            symbol, time_msc, bid, ask, trigger_recv_time_us=recv_time_us,
            now_us=self._clock_us(), kill_switch=self.kill_switch,
        )
        if cmd is not None:
            out.commands.append(cmd)
            st = self.states.get(symbol)
            if st is not None:
                st.watch = False

    def on_bar(self, st: SymbolState, bar: Bar, out: Outputs, tick_pos: int = -1) -> None:
        out.bars.append(bar)
        feats = st.indicators.on_bar(bar)
        if feats is None:  # a bar at or before the last one seen (replay): no new features
            return
        as_of = bar.bar_time + MINUTE_MS  # the bar's information is complete at its close
        feats.update(self.context.features(st.symbol, as_of))  # type: ignore[arg-type]
        fv = FeatureVector(
            symbol=st.symbol, bar_time=bar.bar_time, close=bar.close,
            sma_20=_opt(feats.get("sma_20")), ema_12=_opt(feats.get("ema_12")),
            ema_26=_opt(feats.get("ema_26")), rsi_14=_opt(feats.get("rsi_14")),
            macd=_opt(feats.get("macd")), macd_signal=_opt(feats.get("macd_signal")),
            macd_hist=_opt(feats.get("macd_hist")), bb_upper=_opt(feats.get("bb_upper")),
            bb_middle=_opt(feats.get("bb_middle")), bb_lower=_opt(feats.get("bb_lower")),
            atr_14=_opt(feats.get("atr_14")), volatility_20=_opt(feats.get("volatility_20")),
            momentum_10=_opt(feats.get("momentum_10")), spread=bar.mean_spread,
            tick_count=bar.tick_count, dispersion=bar.dispersion,
            fresh_brokers=bar.fresh_brokers,
            minutes_to_next_event=_opt(feats.get("minutes_to_next_event")),
            minutes_since_last_event=_opt(feats.get("minutes_since_last_event")),
            news_count_1h=int(feats.get("news_count_1h") or 0),
            news_sentiment_1h=_opt(feats.get("news_sentiment_1h")),
            trigger_recv_time_us=bar.trigger_recv_time_us,
        )
        out.features.append(fv)
        if self.defer_decisions:
            out.decisions.append(PendingDecision(
                st.symbol, bar, feats, tick_pos if tick_pos >= 0 else len(out.clean)))
        else:
            self.decide(st.symbol, bar, feats, out)

    def prescore(self, bars: Sequence[tuple[str, dict[str, Any]]]) -> list[float | None]:
        """What :meth:`decide` would score each (symbol, features) with, all in one booster
        call (:meth:`~stages.score.Model.predict_many`: the same bits as one at a time);
        None where it would not score. Offline only: ``tickstream process`` decides a whole
        input's bars after its shards, passing these as ``p_up``. Nothing is counted."""
        model = self.models.current if self.models is not None else None
        scores: list[float | None] = [None] * len(bars)
        if model is None:
            return scores
        at: list[int] = []
        rows: list[Mapping[str, Any]] = []
        for i, (symbol, feats) in enumerate(bars):
            inputs = self._scorable(model, symbol, feats)
            if inputs is not None and model.missing_required(inputs) is None:
                at.append(i)
                rows.append(inputs)
        if rows:
            for i, p in zip(at, model.predict_many(rows).tolist(), strict=True):
                scores[i] = p
        return scores

    def _scorable(self, model: Model, symbol: str, feats: dict[str, Any]
                  ) -> Mapping[str, Any] | None:
        """The model's inputs for a bar of ``symbol`` (None: the model may not score it)."""
        if (model.symbols is not None and symbol not in model.symbols
                and symbol not in self._allowed and "*" not in self._allowed):
            return None
        return derive(feats) if model.feature_set == FEATURE_SET else feats

    def decide(self, symbol: str, bar: Bar, feats: dict[str, Any], out: Outputs,
               p_up: float | None = None) -> None:
        """Score a bar's features and apply the risk rules (at most one command).

        ``p_up``: the score :meth:`prescore` gave these features with the current model,
        used instead of scoring them again."""
        model = self.models.current if self.models is not None else None
        if model is None:
            if self.models is not None and not self._warned_no_model:
                log.warning("no model loaded: features are published, no commands are made")
                self._warned_no_model = True
            return
        inputs = self._scorable(model, symbol, feats)
        if inputs is None:
            self.not_scored["untrained_symbol"] += 1
            if symbol not in self._warned_untrained:
                self._warned_untrained.add(symbol)
                log.warning("model %s was not trained on %s (only %s): %s is not scored "
                            "(TICKSTREAM_MODEL_ALLOW_SYMBOLS allows it)",
                            model.version, symbol, ", ".join(sorted(model.symbols or ())), symbol)
            return
        if model.missing_required(inputs) is not None:
            self.not_scored["warmup"] += 1
            return
        if p_up is None:
            p_up = model.predict_one(inputs)
        blackout = self.context.high_impact_within(
            symbol, bar.bar_time + MINUTE_MS, self.config.risk.event_blackout_min
        )
        cmd = self.risk.decide(
            symbol=symbol, bar_time=bar.bar_time, p_up=p_up, price=bar.close,
            atr=_opt(feats.get("atr_14")), spread=bar.ask_close - bar.bid_close,
            event_blackout=blackout, kill_switch=self.kill_switch,
            model_version=model.version, model_id=model.model_id,
            trigger_recv_time_us=bar.trigger_recv_time_us,
            now_us=self._clock_us(),
        )
        if cmd is not None:
            out.commands.append(cmd)
            st = self.states.get(symbol)
            if st is not None:
                st.watch = self.risk.watching(symbol)

    def flush(self, out: Outputs, close_bars: bool = True) -> None:
        """End of input: resolve held ticks and (optionally) close the open bars, symbol by
        symbol in the order each was first seen."""
        for symbol in list(self.states):
            self.flush_symbol(symbol, out, close_bars)

    def flush_symbol(self, symbol: str, out: Outputs, close_bars: bool = True) -> None:
        st = self.states[symbol]
        for t, rej in st.validator.flush():
            if rej is not None:
                out.rejects.append((t, rej))
            else:
                self._accept(st, t, out)
        if close_bars:
            bar = st.bars.flush()
            if bar is not None:
                self.on_bar(st, bar, out)

    def idle_flush(
        self, now_event_ms: int, idle_ms: int, out: Outputs, keep_open: Container[str] = (),
    ) -> None:
        """Close bars of symbols that have gone quiet (called from a timer); the bars of
        symbols in ``keep_open`` (ticks still on their way) stay open."""
        for symbol, st in self.states.items():
            if symbol in keep_open:
                continue
            bar = st.bars.idle_flush(now_event_ms, idle_ms)
            if bar is not None:
                self.on_bar(st, bar, out)
