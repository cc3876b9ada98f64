"""Scoring: load a versioned XGBoost model and turn one feature vector into P(up).

Model directory layout (written by :func:`stages.train.train_model`)::

    model-<version>.json        XGBoost native JSON model (``Booster.save_model``)
    model-<version>.meta.json   metadata: version, feature_names (training order), label
                                (horizon_bars, definition), training_range, metrics, created_ms
    CURRENT                     optional: one line naming the version to use (operator pin)

Which version is used (highest precedence first):

1. ``CURRENT``, when the file exists and names a version;
2. the version last given to :meth:`ModelStore.load_version` (a ``model_announce`` on the
   ``control`` topic; the compacted topic replays it after a restart);
3. otherwise the highest version by *natural sort* of the version string (``v2 < v10``,
   ``20240105-1 < 20240105-2``). Natural sort was chosen over ``created_ms`` because it needs
   no file to be read to rank versions, cannot be skewed by a trainer's clock, and is what an
   operator sees in ``ls``. Versions are therefore expected to sort in release order.

Failure policy: a model that cannot be loaded never replaces a working one. If the preferred
version is missing or corrupt, the store logs one ERROR and keeps the model it already has; a
store with no model yet walks down the remaining versions (newest first) and takes the first
good one. "No model at all" is not an error: :meth:`ModelStore.latest` returns ``None``, the
caller produces no trading commands, and one WARNING line says so (not one per bar).

Determinism: a :class:`Model` scores with a single thread from a float32 row built in the
model's own feature order, so the same features give the same score bit for bit, whatever the
order of the keys in the caller's mapping.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # xgboost (and the scikit-learn it imports) load with the first model
    import xgboost as xgb

__all__ = [
    "CURRENT_FILE",
    "MODEL_PREFIX",
    "Model",
    "ModelError",
    "ModelStore",
    "import_model_library",
    "meta_path_for",
    "model_path_for",
    "natural_key",
    "rows_to_matrix",
    "valid_version",
]

log = logging.getLogger(__name__)

MODEL_PREFIX = "model-"
META_SUFFIX = ".meta.json"
MODEL_SUFFIX = ".json"
CURRENT_FILE = "CURRENT"

_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_NATURAL_SPLIT = re.compile(r"(\d+)")


class ModelError(Exception):
    """A model or its metadata is missing, unreadable, or inconsistent (message says which)."""


def valid_version(version: str) -> bool:
    """True when ``version`` is safe as part of a file name and cannot collide with a meta file.

    Letters, digits, ``.``, ``_`` and ``-``; starts with a letter or digit; at most 100
    characters; must not end in ``.meta`` (``model-x.meta.json`` is the meta file of ``x``).
    """
    return bool(_VERSION_RE.fullmatch(version)) and not version.endswith(".meta")


def model_path_for(model_dir: Path, version: str) -> Path:
    """Path of the XGBoost model file of ``version``."""
    return model_dir / f"{MODEL_PREFIX}{version}{MODEL_SUFFIX}"


def meta_path_for(model_dir: Path, version: str) -> Path:
    """Path of the metadata file of ``version``."""
    return model_dir / f"{MODEL_PREFIX}{version}{META_SUFFIX}"


def natural_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key comparing digit runs as numbers: ``v2 < v10``, ``1.9 < 1.10``.

    Each chunk becomes ``(kind, number, text)`` so numbers and text never compare directly
    (no ``TypeError``); ties on the number (``01`` vs ``1``) fall back to the text.
    """
    out: list[tuple[int, int, str]] = []
    for i, chunk in enumerate(_NATURAL_SPLIT.split(version)):
        if not chunk:
            continue
        if i % 2:
            out.append((0, int(chunk), chunk))
        else:
            out.append((1, 0, chunk))
    return tuple(out)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _default_required(names: Sequence[str], feature_set: str | None) -> tuple[str, ...]:
    """Required features of a model whose metadata has no ``required_features``."""
    if feature_set is not None:
        return ()  # a scale-free model without the list predates the warm-up gate
    from stages.indicators import CONTEXT_FEATURE_NAMES

    return tuple(n for n in names if n not in CONTEXT_FEATURE_NAMES)


def _require(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise ModelError(f"{path}: invalid metadata: {what}")


class _DenseRowPredictor:
    """``booster.inplace_predict(row)[0]`` for one fixed float32 row buffer, without the
    per-call work of the Python wrapper.

    ``inplace_predict`` inspects the input's type (pandas, arrow, polars, ...), rebuilds the
    array-interface and config JSON and allocates the ctypes outputs on every call: about
    300 µs of a 1-row prediction here, while the C prediction itself takes a few. The row
    buffer never moves (the model fills it in place), so its array interface and the call's
    config are built once and the same C entry point (``XGBoosterPredictFromDense``) is
    called with the same arguments ``inplace_predict`` passes: the same bits out (a test
    checks it on random rows with missing values). :meth:`make` returns None when this
    xgboost lacks the private helpers; the model then calls ``inplace_predict``.
    """

    __slots__ = ("_args", "_call", "_dims", "_handle", "_iface", "_none", "_preds", "_row",
                 "_shape")

    def __init__(self, booster: xgb.Booster, row: np.ndarray) -> None:
        import ctypes

        from xgboost import core
        from xgboost._data_utils import array_interface
        from xgboost._typing import c_bst_ulong

        if row.dtype != np.float32 or row.ndim != 2 or row.shape[0] != 1 or not (
                row.flags.c_contiguous):
            raise ValueError("a 1-row C-contiguous float32 buffer is needed")
        self._row = row  # kept alive: the interface holds its address
        self._handle = booster.handle
        self._iface = array_interface(row)
        self._args = core.make_jcargs(
            type=0, training=False, iteration_begin=0, iteration_end=0, missing=np.nan,
            strict_shape=False, cache_id=0)
        self._none = ctypes.c_void_p()
        self._preds = ctypes.POINTER(ctypes.c_float)()
        self._shape = ctypes.POINTER(c_bst_ulong)()
        self._dims = c_bst_ulong()
        predict = core._LIB.XGBoosterPredictFromDense
        check, byref = core._check_call, ctypes.byref
        args = (self._handle, self._iface, self._args, self._none, byref(self._shape),
                byref(self._dims), byref(self._preds))
        preds = self._preds

        def call() -> float:
            check(predict(*args))
            return float(preds[0])

        self._call = call

    @classmethod
    def make(cls, booster: xgb.Booster, row: np.ndarray) -> Any:
        try:
            return cls(booster, row)._call
        except (ImportError, AttributeError, TypeError, ValueError):
            return None


def import_model_library() -> None:
    """Import xgboost now. It imports scikit-learn, scipy and pandas (a second, ~10^5
    objects), which is why nothing imports it before a model is loaded; a process that
    will load one calls this before freezing its start-up heap, so those objects are
    frozen with the rest."""
    import xgboost  # noqa: F401


class Model:
    """One loaded model version: metadata plus a booster ready for single-row scoring.

    Promises: ``predict_one`` returns P(close[t+H] > close[t]) in [0, 1] for the features of
    bar t, where H is :attr:`horizon_bars`; a feature that is ``None``, NaN or absent from the
    mapping is passed to XGBoost as missing. Not thread-safe (one reusable row buffer), which
    suits the single-threaded asyncio worker.
    """

    __slots__ = (
        "_booster",
        "_cal",
        "_dense",
        "_n",
        "_required",
        "_row",
        "created_ms",
        "digest",
        "feature_names",
        "feature_set",
        "horizon_bars",
        "label_definition",
        "meta",
        "meta_path",
        "metrics",
        "model_path",
        "required_features",
        "symbols",
        "training_range",
        "version",
    )

    def __init__(
        self,
        booster: xgb.Booster,
        *,
        version: str,
        feature_names: Sequence[str],
        horizon_bars: int,
        meta: Mapping[str, Any],
        meta_path: Path,
        model_path: Path,
        digest: str = "",
    ) -> None:
        self._booster = booster
        self.version = version
        #: SHA-256 (first 16 hex digits) of the model file: two different models published
        #: under the same version name still have different ids (:attr:`model_id`).
        self.digest = digest
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self.horizon_bars = horizon_bars
        self.meta: dict[str, Any] = dict(meta)
        self.meta_path = meta_path
        self.model_path = model_path
        label = meta.get("label", {})
        self.label_definition: str = str(label.get("definition", ""))
        tr = meta.get("training_range", {})
        self.training_range: tuple[int, int] = (int(tr["start_ms"]), int(tr["end_ms"]))
        self.metrics: dict[str, Any] = dict(meta.get("metrics", {}))
        self.created_ms: int = int(meta["created_ms"])
        self._n = len(self.feature_names)
        self._row = np.empty((1, self._n), dtype=np.float32)
        self._dense = _DenseRowPredictor.make(booster, self._row)
        #: The feature definition the model was trained on (``stages.features.FEATURE_SET``)
        #: or None for a model on the raw indicator names.
        fs = meta.get("feature_set")
        self.feature_set: str | None = None if fs is None else str(fs)
        #: Symbols the model was trained on (None: not recorded, any symbol is scored).
        syms = meta.get("symbols")
        self.symbols: frozenset[str] | None = None if syms is None else frozenset(syms)
        required = meta.get("required_features")
        if required is None:
            required = _default_required(self.feature_names, self.feature_set)
        #: Features that must all be present (not None or NaN) for a bar to be scored: the
        #: metadata's ``required_features``; for a model without the list, every feature but
        #: the calendar/news context (missing by nature) of a raw-indicator model, so no bar
        #: is scored while an indicator it reads is still warming up.
        self.required_features: tuple[str, ...] = tuple(str(n) for n in required)
        self._required = self.required_features
        cal = meta.get("calibration")
        #: Platt scaling (a, b) of the raw booster output, or None (uncalibrated).
        self._cal: tuple[float, float] | None = (
            None if cal is None else (float(cal["a"]), float(cal["b"])))

    @classmethod
    def load(
        cls, meta_path: Path, *, known_features: Collection[str] | None = None
    ) -> Model:
        """Load and validate the model described by ``meta_path``.

        The model file is ``model-<version>.json`` next to the meta file. Raises
        :class:`ModelError` naming the file and the problem when either file is missing or
        corrupt, the metadata is incomplete, the booster's feature count or names disagree with
        the metadata, or (when ``known_features`` is given: the names the pipeline produces)
        the model needs a feature the pipeline does not produce.
        """
        meta_path = Path(meta_path)
        try:
            raw = meta_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"{meta_path}: cannot read metadata: {_first_line(exc)}") from None
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise ModelError(f"{meta_path}: corrupt metadata JSON: {_first_line(exc)}") from None
        _require(isinstance(meta, dict), meta_path, "not a JSON object")
        version = meta.get("version")
        _require(
            isinstance(version, str) and valid_version(version), meta_path, "bad 'version'"
        )
        assert isinstance(version, str)
        if meta_path.name.startswith(MODEL_PREFIX) and meta_path.name.endswith(META_SUFFIX):
            named = meta_path.name[len(MODEL_PREFIX) : -len(META_SUFFIX)]
            _require(
                named == version, meta_path, f"version {version!r} != file name's {named!r}"
            )
        names = meta.get("feature_names")
        _require(
            isinstance(names, list) and len(names) > 0
            and all(isinstance(n, str) and n for n in names),
            meta_path, "'feature_names' must be a non-empty list of strings",
        )
        assert isinstance(names, list)
        _require(len(set(names)) == len(names), meta_path, "duplicate feature names")
        label = meta.get("label")
        _require(isinstance(label, dict), meta_path, "'label' must be an object")
        assert isinstance(label, dict)
        horizon = label.get("horizon_bars")
        _require(
            isinstance(horizon, int) and not isinstance(horizon, bool) and horizon >= 1,
            meta_path, "'label.horizon_bars' must be an integer >= 1",
        )
        assert isinstance(horizon, int)
        tr = meta.get("training_range")
        _require(
            isinstance(tr, dict)
            and all(isinstance(tr.get(k), int) for k in ("start_ms", "end_ms")),
            meta_path, "'training_range' must have integer start_ms and end_ms",
        )
        _require(isinstance(meta.get("metrics", {}), dict), meta_path, "'metrics' not an object")
        _require(isinstance(meta.get("created_ms"), int), meta_path, "'created_ms' not an int")
        cal = meta.get("calibration")
        if cal is not None:
            _require(
                isinstance(cal, dict) and cal.get("method") == "platt"
                and all(isinstance(cal.get(k), (int, float)) and math.isfinite(cal[k])
                        for k in ("a", "b")),
                meta_path, "'calibration' must be {method: platt, a: number, b: number}",
            )
        required = meta.get("required_features", [])
        _require(isinstance(required, list) and all(n in names for n in required),
                 meta_path, "'required_features' must list model features")
        syms = meta.get("symbols")
        _require(syms is None or (isinstance(syms, (dict, list)) and len(syms) > 0),
                 meta_path, "'symbols' must name the symbols trained on")
        fs = meta.get("feature_set")
        if fs is not None:
            from stages.features import FEATURE_NAMES as SCALE_FREE
            from stages.features import FEATURE_SET

            _require(fs == FEATURE_SET, meta_path,
                     f"feature set {fs!r} is not the pipeline's {FEATURE_SET!r}")
            unknown_sf = [n for n in names if n not in SCALE_FREE]
            if unknown_sf:
                raise ModelError(
                    f"{meta_path}: feature list mismatch: the model needs features the "
                    f"pipeline does not produce: {unknown_sf}")
        if known_features is not None and fs is None:
            unknown = [n for n in names if n not in known_features]
            if unknown:
                raise ModelError(
                    f"{meta_path}: feature list mismatch: the model needs features the pipeline "
                    f"does not produce: {unknown}"
                )
        model_path = model_path_for(meta_path.parent, version)
        if not model_path.is_file():
            raise ModelError(f"{model_path}: model file missing for version {version!r}")
        try:
            digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
        except OSError as exc:
            raise ModelError(f"{model_path}: cannot read model: {_first_line(exc)}") from None
        import xgboost as xgb  # here, not at the top: a command with no model starts 1 s sooner

        try:
            booster = xgb.Booster(model_file=str(model_path))
        except (xgb.core.XGBoostError, OSError, ValueError) as exc:
            raise ModelError(f"{model_path}: corrupt model: {_first_line(exc)}") from None
        n_model = booster.num_features()
        if n_model != len(names):
            raise ModelError(
                f"{model_path}: feature list mismatch: the model has {n_model} features, "
                f"{meta_path.name} lists {len(names)}"
            )
        if booster.feature_names is not None and list(booster.feature_names) != names:
            raise ModelError(
                f"{model_path}: feature list mismatch: model feature names "
                f"{list(booster.feature_names)} != metadata {names}"
            )
        # One thread: deterministic, no thread-pool wake-up per row, no oversubscription.
        booster.set_param({"nthread": 1})
        return cls(
            booster,
            version=version,
            feature_names=names,
            horizon_bars=horizon,
            meta=meta,
            meta_path=meta_path,
            model_path=model_path,
            digest=digest,
        )

    def predict_one(self, features: Mapping[str, float | int | None]) -> float:
        """P(up over the next ``horizon_bars`` bars) for one feature vector (hot path),
        calibrated when the model carries a calibration map."""
        row = self._row[0]
        get = features.get
        nan = math.nan
        for i, name in enumerate(self.feature_names):
            v = get(name)
            row[i] = nan if v is None else v
        dense = self._dense
        p = (dense() if dense is not None
             else float(self._booster.inplace_predict(self._row, validate_features=False)[0]))
        return p if self._cal is None else self.calibrate(p)

    def calibrate(self, p_raw: float) -> float:
        """The calibrated probability of a raw booster output (identity without a map):
        the same formula and clipping as ``offline.evaluate.Platt.apply``."""
        if self._cal is None:
            return p_raw
        a, b = self._cal
        q = min(max(p_raw, 1e-6), 1.0 - 1e-6)
        return 1.0 / (1.0 + math.exp(-(a * math.log(q / (1.0 - q)) + b)))

    def missing_required(self, features: Mapping[str, float | int | None]) -> str | None:
        """The first required feature that is None or NaN in ``features`` (None: all there)."""
        for name in self._required:
            v = features.get(name)
            if v is None or v != v:
                return name
        return None

    def predict_many(self, rows: Sequence[Mapping[str, float | int | None]]) -> np.ndarray:
        """P(up) for many feature vectors at once (offline: backtests, evaluation).

        Gives the same values as :meth:`predict_one` on each row, bit for bit (tested): one
        booster call for all rows, each row's trees summed in the same order, and the
        calibration map applied row by row with the same ``math`` functions.
        """
        x = self.matrix(rows)
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        p = np.asarray(self._booster.inplace_predict(x, validate_features=False))
        if self._cal is None:
            return p
        calibrate = self.calibrate
        return np.array([calibrate(v) for v in p.tolist()], dtype=np.float64)

    def matrix(self, rows: Sequence[Mapping[str, float | int | None]]) -> np.ndarray:
        """The float32 design matrix in this model's feature order (None/absent -> NaN)."""
        return rows_to_matrix(rows, self.feature_names)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for health/status endpoints."""
        return {
            "version": self.version,
            "horizon_bars": self.horizon_bars,
            "n_features": self._n,
            "training_range": list(self.training_range),
            "created_ms": self.created_ms,
            "feature_set": self.feature_set,
            "symbols": None if self.symbols is None else sorted(self.symbols),
            "required_features": list(self.required_features),
            "calibrated": self._cal is not None,
            "model_id": self.model_id,
            "metrics": self.metrics,
            "meta_path": str(self.meta_path),
        }

    @property
    def model_id(self) -> str:
        """``version@digest``: what command ids are made from (the version name alone could
        be reused by another model)."""
        return f"{self.version}@{self.digest}" if self.digest else self.version

    def __repr__(self) -> str:
        return f"Model(version={self.version!r}, horizon_bars={self.horizon_bars})"


def rows_to_matrix(
    rows: Sequence[Mapping[str, float | int | None]], feature_names: Sequence[str]
) -> np.ndarray:
    """Float32 matrix, one row per mapping, columns in ``feature_names`` order; None -> NaN."""
    x = np.full((len(rows), len(feature_names)), np.nan, dtype=np.float32)
    for r, features in enumerate(rows):
        get = features.get
        for c, name in enumerate(feature_names):
            v = get(name)
            if v is not None:
                x[r, c] = v
    return x


_Sig = tuple[tuple[str, int, int], ...]


class ModelStore:
    """Keeps the model to score with, following a model directory without ever crashing.

    ``current`` is the fast path (read it per bar). ``maybe_reload(now_s)`` looks at the
    directory at most every ``reload_interval_s`` seconds of the caller's clock and reloads
    only when the listing or an mtime/size changed; ``latest()`` does the same check at once.
    A version whose files failed to load is not retried until those files change, so a corrupt
    file produces one ERROR line, not one per check.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        reload_interval_s: float = 30.0,
        known_features: Collection[str] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.reload_interval_s = float(reload_interval_s)
        self.known_features = None if known_features is None else frozenset(known_features)
        self.current: Model | None = None
        self._current_sig: _Sig | None = None  # signature of the loaded version's files
        self._announced: tuple[str, Path] | None = None  # (version, directory)
        self._pinned_by: str | None = None
        self._dir_sig: _Sig | None = None
        self._scanned = False
        self._last_check_s: float | None = None
        self._failed: dict[str, _Sig] = {}
        self._last_error: str | None = None
        self._warned_no_model = False
        self._versions: list[str] = []

    # -- public API -------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True when a model is loaded (commands can be produced)."""
        return self.current is not None

    def latest(self) -> Model | None:
        """The model to use now, after checking the directory (``None``: no usable model)."""
        self._check()
        return self.current

    def maybe_reload(self, now_s: float) -> bool:
        """Check the directory if ``reload_interval_s`` passed since the last check.

        ``now_s`` is the caller's clock in seconds (monotonic or event time). Returns True
        when the model in use changed.
        """
        last = self._last_check_s
        if last is not None and now_s - last < self.reload_interval_s:
            return False
        self._last_check_s = now_s
        return self._check()

    def load_version(self, version: str, model_path: Path | str | None = None) -> Model:
        """Load ``version`` and make it current (a ``model_announce`` control message).

        ``model_path`` may name the directory holding the version or its meta file; default:
        the store's directory. Raises :class:`ModelError` (the current model stays) when the
        version cannot be loaded. A ``CURRENT`` file, when present, still wins at the next
        directory check: it is the operator's on-disk pin.
        """
        if not valid_version(version):
            raise ModelError(f"invalid model version {version!r}")
        if model_path is None:
            meta = meta_path_for(self.model_dir, version)
        else:
            p = Path(model_path)
            meta = meta_path_for(p, version) if p.is_dir() else p
        model = Model.load(meta, known_features=self.known_features)
        if model.version != version:
            raise ModelError(f"{meta}: holds version {model.version!r}, not {version!r}")
        self._announced = (version, meta.parent)
        self._install(model, self._file_sig(meta.parent, version), "announce")
        return model

    def status(self) -> dict[str, Any]:
        """JSON-ready health report: healthy, version, pin, available and failed versions."""
        cur = self.current
        return {
            "healthy": cur is not None,
            "model_dir": str(self.model_dir),
            "version": None if cur is None else cur.version,
            "model": None if cur is None else cur.describe(),
            "pinned_by": self._pinned_by,
            "available_versions": list(self._versions),
            "failed_versions": sorted(self._failed),
            "last_error": self._last_error,
            "last_check_s": self._last_check_s,
        }

    # -- internals --------------------------------------------------------------------------

    def _scan(self) -> tuple[_Sig, list[str]]:
        """Signature of the directory (relevant names, mtimes, sizes) and meta versions."""
        entries: list[tuple[str, int, int]] = []
        versions: list[str] = []
        try:
            with os.scandir(self.model_dir) as it:
                for e in it:
                    name = e.name
                    if name == CURRENT_FILE or (
                        name.startswith(MODEL_PREFIX) and name.endswith(MODEL_SUFFIX)
                    ):
                        try:
                            st = e.stat()
                        except OSError:
                            continue
                        entries.append((name, st.st_mtime_ns, st.st_size))
                        if name.endswith(META_SUFFIX):
                            v = name[len(MODEL_PREFIX) : -len(META_SUFFIX)]
                            if valid_version(v):
                                versions.append(v)
        except OSError:
            pass  # missing or unreadable directory: no models
        entries.sort()
        versions.sort(key=natural_key)
        return tuple(entries), versions

    def _file_sig(self, directory: Path, version: str) -> _Sig:
        out: list[tuple[str, int, int]] = []
        for p in (meta_path_for(directory, version), model_path_for(directory, version)):
            try:
                st = p.stat()
                out.append((str(p), st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((str(p), -1, -1))
        return tuple(out)

    def _read_pin(self) -> str | None:
        path = self.model_dir / CURRENT_FILE
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._error(f"{path}: cannot read: {_first_line(exc)}; ignoring the pin")
            return None
        if not text:
            return None
        if not valid_version(text):
            self._error(f"{path}: invalid version {text!r}; ignoring the pin")
            return None
        return text

    def _check(self) -> bool:
        """Re-evaluate the directory if it changed; True when the current model changed."""
        sig, versions = self._scan()
        if self._scanned and sig == self._dir_sig:
            return False
        self._scanned = True
        self._dir_sig = sig
        self._versions = versions
        before = self.current
        pin = self._read_pin()
        directory = self.model_dir
        preferred: str | None = None
        source: str | None = None
        if pin is not None:
            preferred, source = pin, "CURRENT"
        elif self._announced is not None:
            (preferred, directory), source = self._announced, "announce"
        elif versions:
            preferred = versions[-1]

        if (
            preferred is not None
            and not self._try(preferred, source, directory)
            and self.current is None
        ):
            # Nothing running yet: fall back to the newest version that loads.
            for v in reversed(versions):
                if v != preferred and self._try(v, None, self.model_dir):
                    break
        if self.current is None and not self._warned_no_model:
            self._warned_no_model = True
            log.warning(
                "no usable model in %s: scoring is off and no trading commands will be "
                "produced until one appears", self.model_dir,
            )
        return self.current is not before

    def _try(self, version: str, source: str | None, directory: Path) -> bool:
        """Make ``version`` current if it loads; False (current kept) when it does not."""
        fsig = self._file_sig(directory, version)
        cur = self.current
        if cur is not None and cur.version == version and self._current_sig == fsig:
            self._pinned_by = source
            return True  # already in use, files unchanged
        if self._failed.get(version) == fsig:
            return False  # known bad, unchanged since: do not retry or log again
        try:
            model = Model.load(
                meta_path_for(directory, version), known_features=self.known_features
            )
        except ModelError as exc:
            self._failed[version] = fsig
            keep = f"keeping {cur.version}" if cur is not None else "no model loaded"
            self._error(f"cannot load model version {version!r}: {exc} ({keep})")
            return False
        self._failed.pop(version, None)
        self._install(model, fsig, source)
        return True

    def _install(self, model: Model, fsig: _Sig, source: str | None) -> None:
        self.current = model
        self._current_sig = fsig
        self._pinned_by = source
        self._warned_no_model = False
        log.info(
            "model %s loaded from %s (horizon %d bars, %d features%s)",
            model.version, model.meta_path, model.horizon_bars, len(model.feature_names),
            f", pinned by {source}" if source else "",
        )

    def _error(self, message: str) -> None:
        self._last_error = message
        log.error("%s", message)


def require_model(model_dir: Path) -> ModelStore:
    """A store of ``model_dir`` holding a usable model, or :class:`ModelError` in one line
    saying why not (no such directory, not a directory, no or no loadable model): what a
    batch command asked to score with must exist before any work starts. The store's own
    log line about the missing model is held back (the error says it)."""
    if not model_dir.is_dir():
        raise ModelError(
            f"model directory {model_dir} " + ("is not a directory" if model_dir.exists()
                                               else "does not exist")
            + " (name a directory that `tickstream train` wrote)")
    store = ModelStore(model_dir)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        model = store.latest()
    finally:
        log.setLevel(level)
    if model is None:
        why = store.status().get("last_error")
        raise ModelError(f"no usable model in {model_dir}: " + (
            str(why) if why else "no model-<version>.meta.json (train one: tickstream train)"))
    return store
