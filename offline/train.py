"""``tickstream train --features FILE.parquet``: walk-forward evaluation, then a model.

Input: the labelled feature matrix ``tickstream replay`` writes (one row per symbol and bar,
the scale-free features of :mod:`stages.features`, a label in {-1, 0, 1} for the move over
the next H minutes beyond a threshold). The model predicts **P(up | the move is worth
trading)**: it is trained and scored on the rows whose label is ±1 (a flat row, |move| <=
threshold, carries no direction; they are counted and left out).

1. **Walk-forward** (:mod:`offline.walkforward`): ``--folds`` folds in time order across all
   symbols, expanding (or rolling) training windows, a purge of the label horizon and an
   embargo between every fit/validation/test part. In each fold the model is fitted on the
   fit rows, calibrated (Platt scaling) and its entry threshold chosen on the validation rows,
   and only then scored on the test rows, next to the baselines fitted on the training rows
   (:mod:`offline.evaluate`): base rate, majority class, previous bar's direction.
2. **Verdict**: the test predictions of all folds are pooled; the model *beats* the best
   baseline when the upper end of the 95% block-bootstrap interval of (model log loss -
   best baseline log loss) is below 0. Otherwise nothing is promoted unless ``--force``.
3. **The saved model**: fitted on all rows but the last validation part, calibrated and
   thresholded on that part; its metadata holds everything needed to audit it (see
   :func:`train`). A PNG and a JSON report go to ``<model-dir>/reports/``.

Deterministic: XGBoost with one thread and a fixed seed, and no wall-clock value in any
file (``created_ms`` is the end of the training data), so the same input gives the same
bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from offline.evaluate import (
    Platt,
    block_bootstrap,
    calibration_table,
    choose_threshold,
    log_loss,
    metrics,
    previous_bar_baseline,
    threshold_trades,
)
from offline.walkforward import SplitError, Window, final_split, walk_forward
from stages.config import SymbolSpec
from stages.features import FEATURE_NAMES, FEATURE_SET, OPTIONAL_FEATURES
from stages.score import meta_path_for, model_path_for, valid_version

MINUTE_MS = 60_000
TARGET = "1 when the label is +1 (up beyond the threshold), 0 when -1; flat rows excluded"

#: Shallow trees, slow learning rate, one thread (deterministic).
PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 3,
    "learning_rate": 0.05,
    "min_child_weight": 5.0,
    "subsample": 1.0,
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "random_state": 0,
    "n_jobs": 1,
}
BASELINES = ("base_rate", "previous_bar")


class TrainError(RuntimeError):
    """An input or option that cannot be trained on: one line saying what to do."""


class Dataset:
    """The labelled rows of a feature file, ready for training (flat rows removed)."""

    def __init__(self, path: Path, symbols: Mapping[str, SymbolSpec]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not path.is_file():
            raise TrainError(f"{path}: no such file; write one with `tickstream replay`")
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise TrainError(f"{path}: not a readable Parquet feature file ({exc}); "
                             "write one with `tickstream replay`") from None
        raw = (table.schema.metadata or {}).get(b"tickstream")
        if raw is None:
            raise TrainError(f"{path}: no tickstream metadata: not written by "
                             "`tickstream replay`")
        self.meta: dict[str, Any] = json.loads(raw)
        if self.meta.get("feature_set") != FEATURE_SET:
            raise TrainError(f"{path}: feature set {self.meta.get('feature_set')!r}, this "
                             f"trainer needs {FEATURE_SET!r}: replay the history again")
        self.path = path
        self.fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
        cols = table.to_pydict()
        label = np.asarray(cols["label"], dtype=np.int64)
        keep = label != 0
        self.flat_rows = int((~keep).sum())
        self.horizon_min = int(self.meta["horizon_min"])
        sym_all = np.asarray(cols["symbol"], dtype=object)
        times_all = np.asarray(cols["bar_time"], dtype=np.int64)
        close_all = np.asarray(cols["close"], dtype=np.float64)
        # The previous bar's direction from the whole file (flat rows included).
        close_at = {(s, int(t)): c for s, t, c in zip(sym_all, times_all, close_all,
                                                       strict=True)}
        prev = np.zeros(len(label), dtype=np.int64)
        for i, (s, t, c) in enumerate(zip(sym_all, times_all, close_all, strict=True)):
            pc = close_at.get((s, int(t) - MINUTE_MS))
            if pc is not None:
                prev[i] = 1 if c > pc else -1 if c < pc else 0
        self.symbol = sym_all[keep]
        self.times = times_all[keep]
        self.y = (label[keep] == 1).astype(np.int64)
        self.prev = prev[keep]
        x = np.full((int(keep.sum()), len(FEATURE_NAMES)), np.nan, dtype=np.float32)
        for j, name in enumerate(FEATURE_NAMES):
            col = np.asarray([np.nan if v is None else v for v in cols[f"f_{name}"]],
                             dtype=np.float64)
            x[:, j] = col[keep]
        self.x = x
        unknown = sorted(set(self.symbol) - set(symbols))
        if unknown:
            raise TrainError(f"{path}: symbols {unknown} have no pip size in the settings "
                             "(TICKSTREAM_SYMBOLS)")
        pip = np.asarray([symbols[s].pip_size for s in self.symbol], dtype=np.float64)
        close = close_all[keep]
        future = np.asarray(cols["future_close"], dtype=np.float64)[keep]
        spread = np.asarray(cols["spread"], dtype=np.float64)[keep]
        self.move_pips = (future - close) / pip
        self.cost_pips = spread / pip  # the bar's mean consolidated spread: optimistic
        if len(self.y) < 100:
            raise TrainError(f"{path}: {len(self.y)} rows with a direction; at least 100 "
                             "are needed (replay a longer range)")

    def rows_by_symbol(self, idx: np.ndarray | None = None) -> dict[str, int]:
        s = self.symbol if idx is None else self.symbol[idx]
        names, counts = np.unique(s.astype(str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def _fit(x: np.ndarray, y: np.ndarray) -> Any:
    import xgboost as xgb

    clf = xgb.XGBClassifier(**PARAMS)
    clf.fit(x, y)
    booster = clf.get_booster()
    booster.feature_names = list(FEATURE_NAMES)
    booster.set_param({"nthread": 1})
    return booster


def _raw(booster: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.inplace_predict(x, validate_features=False), dtype=np.float64)


def _time_order(ds: Dataset, idx: np.ndarray) -> np.ndarray:
    return idx[np.lexsort((ds.symbol[idx].astype(str), ds.times[idx]))]


def _ci_diff(y: np.ndarray, p: np.ndarray, q: np.ndarray) -> tuple[float, float] | None:
    def stat(i: np.ndarray) -> float:
        return log_loss(y[i], p[i]) - log_loss(y[i], q[i])

    return block_bootstrap(stat, len(y))


def _ci_auc(y: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    from offline.evaluate import auc

    return block_bootstrap(lambda i: auc(y[i], p[i]), len(y))


def _score_part(
    y: np.ndarray, p: np.ndarray, base: np.ndarray, prev: np.ndarray,
) -> dict[str, Any]:
    """Model and baseline metrics on one set of test rows (time-ordered), with intervals."""
    out: dict[str, Any] = {"rows": len(y), "up_share": float(y.mean()),
                           "model": metrics(y, p),
                           "base_rate": metrics(y, base), "previous_bar": metrics(y, prev)}
    majority = 1.0 if base[0] >= 0.5 else 0.0
    out["majority_accuracy"] = float(np.mean(y == majority))
    best = min(BASELINES, key=lambda b: out[b]["logloss"])
    out["best_baseline"] = best
    out["logloss_vs_best"] = out["model"]["logloss"] - out[best]["logloss"]
    out["logloss_vs_best_ci"] = _ci_diff(y, p, base if best == "base_rate" else prev)
    out["auc_ci"] = _ci_auc(y, p)
    return out


def evaluate(
    ds: Dataset, *, n_folds: int, embargo_min: int | None, window: Window,
    valid_fraction: float, progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The walk-forward folds: per-fold and pooled metrics against the baselines."""
    h_ms = ds.horizon_min * MINUTE_MS
    e_ms = None if embargo_min is None else embargo_min * MINUTE_MS
    try:
        folds = walk_forward(ds.times, n_folds=n_folds, horizon_ms=h_ms, embargo_ms=e_ms,
                             valid_fraction=valid_fraction, window=window)
    except SplitError as exc:
        raise TrainError(str(exc)) from None
    reports: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in ("y", "p", "base", "prev", "net")}
    for fold in folds:
        if progress:
            progress(f"fold {fold.number}/{len(folds)}")
        train = np.concatenate([fold.fit, fold.valid])
        test = _time_order(ds, fold.test)
        booster = _fit(ds.x[fold.fit], ds.y[fold.fit])
        iso = Platt.fit(_raw(booster, ds.x[fold.valid]), ds.y[fold.valid])
        p_valid = iso.apply(_raw(booster, ds.x[fold.valid]))
        p_test = iso.apply(_raw(booster, ds.x[test]))
        y_test = ds.y[test]
        rate = float(ds.y[train].mean())
        base = np.full(len(test), min(max(rate, 1e-3), 1 - 1e-3))
        prev = previous_bar_baseline(ds.y[train], ds.prev[train], ds.prev[test])
        chosen = choose_threshold(p_valid, ds.move_pips[fold.valid], ds.cost_pips[fold.valid])
        rep = _score_part(y_test, p_test, base, prev)
        thr = chosen["threshold"]
        net = (threshold_trades(p_test, ds.move_pips[test], ds.cost_pips[test], thr)
               if thr is not None else np.empty(0))
        rep.update({
            "fold": fold.number, "ranges": fold.ranges(ds.times), "fit_rows": len(fold.fit),
            "valid_rows": len(fold.valid), "purged_rows": fold.purged,
            "threshold": thr, "threshold_valid_net_pips": chosen["mean_net_pips"],
            "test_trades": len(net),
            "test_net_pips_per_trade": float(net.mean()) if len(net) else None,
        })
        reports.append(rep)
        for key, arr in (("y", y_test), ("p", p_test), ("base", base), ("prev", prev),
                         ("net", net)):
            pooled[key].append(arr)
    cat = {k: np.concatenate(v) if v else np.empty(0) for k, v in pooled.items()}
    whole = _score_part(cat["y"], cat["p"], cat["base"], cat["prev"])
    whole["calibration"] = calibration_table(cat["y"], cat["p"])
    whole["test_trades"] = len(cat["net"])
    whole["test_net_pips_per_trade"] = float(cat["net"].mean()) if len(cat["net"]) else None
    ci = whole["logloss_vs_best_ci"]
    beats = ci is not None and ci[1] < 0.0
    return {"folds": reports, "pooled": whole, "beats_best_baseline": beats}


def _code_version() -> str:
    try:
        version = importlib.metadata.version("tickstream")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        if rev.returncode == 0 and rev.stdout.strip():
            return f"{version}+g{rev.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _library_versions() -> dict[str, str]:
    out = {}
    for name in ("xgboost-cpu", "scikit-learn", "numpy", "pyarrow"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def next_version(model_dir: Path) -> str:
    """``v<N+1>`` after the highest ``v<N>`` in ``model_dir`` (``v1`` in an empty one)."""
    best = 0
    for p in model_dir.glob("model-v*.meta.json"):
        tail = p.name[len("model-v"):-len(".meta.json")]
        if tail.isdigit():
            best = max(best, int(tail))
    return f"v{best + 1}"


def train(
    features: Path, model_dir: Path, symbols: Mapping[str, SymbolSpec], *,
    version: str | None = None, n_folds: int = 4, embargo_min: int | None = None,
    window: Window = "expanding", valid_fraction: float = 0.25, force: bool = False,
    report: bool = True, progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate walk-forward, then save (promote) the model when it beats the baselines or
    ``force``; returns the summary ``--json`` prints (``promoted`` says which)."""
    from stages.train import save_version

    ds = Dataset(features, symbols)
    version = version or next_version(model_dir)
    if not valid_version(version):
        raise TrainError(f"invalid model version {version!r} (letters, digits, '.', '_', '-')")
    if model_path_for(model_dir, version).exists() or meta_path_for(model_dir, version).exists():
        raise TrainError(f"model version {version!r} already exists in {model_dir}: pick "
                         "another --version (or leave it out for the next free one)")
    wf = evaluate(ds, n_folds=n_folds, embargo_min=embargo_min, window=window,
                  valid_fraction=valid_fraction, progress=progress)
    if progress:
        progress("final model")
    h_ms = ds.horizon_min * MINUTE_MS
    try:
        fit, valid = final_split(ds.times, horizon_ms=h_ms, valid_fraction=valid_fraction,
                                 embargo_ms=None if embargo_min is None
                                 else embargo_min * MINUTE_MS)
    except SplitError as exc:
        raise TrainError(str(exc)) from None
    booster = _fit(ds.x[fit], ds.y[fit])
    p_raw_valid = _raw(booster, ds.x[valid])
    iso = Platt.fit(p_raw_valid, ds.y[valid])
    chosen = choose_threshold(iso.apply(p_raw_valid), ds.move_pips[valid], ds.cost_pips[valid])
    gain = booster.get_score(importance_type="gain")
    importance = {n: float(gain.get(n, 0.0)) for n in FEATURE_NAMES}
    end_ms = int(ds.times.max()) + MINUTE_MS
    meta: dict[str, Any] = {
        "version": version,
        "feature_set": FEATURE_SET,
        "feature_names": list(FEATURE_NAMES),
        "required_features": [n for n in FEATURE_NAMES if n not in OPTIONAL_FEATURES],
        "label": {
            "horizon_bars": ds.horizon_min, "horizon_min": ds.horizon_min,
            "definition": ds.meta.get("label_definition"), "threshold": ds.meta.get("threshold"),
            "target": TARGET,
        },
        "calibration": iso.to_dict(),
        "suggested_entry_threshold": chosen["threshold"],
        "threshold_search": chosen,
        "symbols": ds.rows_by_symbol(),
        "training_range": {"start_ms": int(ds.times.min()), "end_ms": end_ms},
        "final_split": {"fit_rows": len(fit), "valid_rows": len(valid),
                        "fit_rows_by_symbol": ds.rows_by_symbol(fit),
                        "valid_range": [int(ds.times[valid].min()), int(ds.times[valid].max())]},
        "flat_rows_excluded": ds.flat_rows,
        "walk_forward": {"folds": n_folds, "window": window, "valid_fraction": valid_fraction,
                         "embargo_min": ds.horizon_min if embargo_min is None else embargo_min,
                         "purge_min": ds.horizon_min, **wf},
        "feature_importance_gain": importance,
        "params": {k: v for k, v in PARAMS.items() if isinstance(v, (str, int, float, bool))},
        "libraries": _library_versions(),
        "code_version": _code_version(),
        "data": {"file": features.name, "sha256": ds.fingerprint,
                 "replay": {k: ds.meta.get(k) for k in ("from_ms", "to_ms", "ticks")}},
        "metrics": {"walk_forward_logloss": wf["pooled"]["model"]["logloss"],
                    "walk_forward_auc": wf["pooled"]["model"]["auc"]},
        "created_ms": end_ms,
    }
    promoted = bool(wf["beats_best_baseline"] or force)
    summary: dict[str, Any] = {
        "version": version, "features": str(features), "rows": len(ds.y),
        "flat_rows_excluded": ds.flat_rows, "symbols": meta["symbols"],
        "horizon_min": ds.horizon_min, "walk_forward": wf,
        "beats_best_baseline": wf["beats_best_baseline"], "promoted": promoted,
        "forced": bool(force and not wf["beats_best_baseline"]),
        "suggested_entry_threshold": chosen["threshold"],
    }
    if promoted:
        meta_path = save_version(model_dir, version, booster, meta)
        digest = hashlib.sha256(model_path_for(model_dir, version).read_bytes()).hexdigest()
        summary.update({"meta": str(meta_path), "model_sha256": digest})
    if report:
        from offline.train_report import write_report

        reports = model_dir / "reports"
        reports.mkdir(parents=True, exist_ok=True)
        png = reports / f"{version}.png"
        write_report(png, meta, promoted)
        (reports / f"{version}.json").write_text(
            json.dumps({**summary, "meta": meta}, indent=2, sort_keys=True) + "\n",
            encoding="utf-8")
        summary["report_png"] = str(png)
    return summary



def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """The walk-forward report as a few lines of text (what ``train`` prints)."""
    wf = summary["walk_forward"]
    lines = [
        f"walk-forward over {summary['rows']:,} rows with a direction "
        f"({summary['flat_rows_excluded']:,} flat rows left out), horizon "
        f"{summary['horizon_min']} min, symbols "
        + ", ".join(f"{s} {n:,}" for s, n in summary["symbols"].items()),
        "fold  test rows  logloss model / base rate / prev bar   AUC [95% CI]          "
        "acc model / majority  brier  trades  net pips/trade",
    ]
    for r in [*wf["folds"], {**wf["pooled"], "fold": "all"}]:
        ci = r["auc_ci"]
        auc_txt = f"{_fmt(r['model']['auc'])} [{_fmt(ci[0]) if ci else 'n/a'}, " \
                  f"{_fmt(ci[1]) if ci else 'n/a'}]"
        lines.append(
            f"{r['fold']!s:>4}  {r['rows']:>9,}  {_fmt(r['model']['logloss'])} / "
            f"{_fmt(r['base_rate']['logloss'])} / {_fmt(r['previous_bar']['logloss'])}"
            f"          {auc_txt:<22}{_fmt(r['model']['accuracy'])} / "
            f"{_fmt(r['majority_accuracy'])}         {_fmt(r['model']['brier'])}  "
            f"{r['test_trades']:>6}  {_fmt(r['test_net_pips_per_trade'], 2)}")
    pooled = wf["pooled"]
    ci = pooled["logloss_vs_best_ci"]
    ci_txt = "n/a" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"
    ece = pooled["calibration"]["ece"]
    lines.append(f"calibration (pooled test): expected calibration error {_fmt(ece)}")
    verdict = (f"model - best baseline ({pooled['best_baseline']}) log loss "
               f"{pooled['logloss_vs_best']:+.4f}, 95% CI {ci_txt}: ")
    if summary["beats_best_baseline"]:
        verdict += "the model beats the best baseline"
    else:
        verdict += "NO EDGE: the model does not beat the best baseline"
    lines.append(verdict)
    thr = summary["suggested_entry_threshold"]
    lines.append("suggested entry threshold (chosen on validation): "
                 + ("none is profitable on validation" if thr is None else f"{thr:.2f}"))
    if summary["promoted"]:
        lines.append(f"saved {summary['version']} -> {summary['meta']}"
                     + (" (--force: promoted without an edge)" if summary["forced"] else ""))
    else:
        lines.append(f"not promoted: {summary['version']} was not saved "
                     "(--force saves it anyway)")
    if "report_png" in summary:
        lines.append(f"report: {summary['report_png']}")
    return "\n".join(lines)
