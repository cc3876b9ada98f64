"""The training report PNG: per-fold metrics against the baselines, feature importance and
the calibration of the pooled out-of-sample predictions (matplotlib, no screen needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_report(path: Path, meta: Mapping[str, Any], promoted: bool) -> None:
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no font-cache INFO lines
    import matplotlib.pyplot as plt

    wf = meta["walk_forward"]
    folds = wf["folds"]
    names = [str(f["fold"]) for f in folds]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    xs = range(len(folds))
    for key, label, style in (("model", "model", "o-"), ("base_rate", "base rate", "s--"),
                              ("previous_bar", "previous bar", "^:")):
        ax.plot(xs, [f[key]["logloss"] for f in folds], style, label=label)
    ax.set_xticks(list(xs), names)
    ax.set_xlabel("fold (test block)")
    ax.set_ylabel("log loss (lower is better)")
    ax.set_title("test log loss per fold")
    ax.legend()

    ax = axes[0][1]
    aucs = [f["model"]["auc"] if f["model"]["auc"] is not None else 0.5 for f in folds]
    lo = [a - (f["auc_ci"][0] if f["auc_ci"] else a) for a, f in zip(aucs, folds, strict=True)]
    hi = [(f["auc_ci"][1] if f["auc_ci"] else a) - a for a, f in zip(aucs, folds, strict=True)]
    ax.errorbar(list(xs), aucs, yerr=[lo, hi], fmt="o", capsize=4, label="model AUC, 95% CI")
    ax.axhline(0.5, color="grey", linestyle="--", label="no skill")
    ax.set_xticks(list(xs), names)
    ax.set_xlabel("fold (test block)")
    ax.set_title("test AUC per fold")
    ax.legend()

    ax = axes[1][0]
    imp = sorted(meta["feature_importance_gain"].items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in imp], [v for _, v in imp])
    ax.set_title("feature importance (gain), saved model")

    ax = axes[1][1]
    bins = wf["pooled"]["calibration"]["bins"]
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
    ax.plot([b["mean_p"] for b in bins], [b["observed"] for b in bins], "o-",
            label=f"pooled test, ECE {wf['pooled']['calibration']['ece']:.3f}")
    ax.set_xlabel("predicted P(up)")
    ax.set_ylabel("observed up share")
    ax.set_title("calibration (Platt scaling, fitted on validation)")
    ax.legend()

    pooled = wf["pooled"]
    verdict = "beats the best baseline" if wf["beats_best_baseline"] else "NO EDGE"
    fig.suptitle(f"model {meta['version']} ({meta['feature_set']}, H={meta['label']['horizon_min']}"
                 f" min): {verdict}; pooled log loss {pooled['model']['logloss']:.4f} vs "
                 f"{pooled['best_baseline']} {pooled[pooled['best_baseline']]['logloss']:.4f}"
                 f"{'' if promoted else ' — not promoted'}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # No date in the file: the same training gives the same bytes.
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
