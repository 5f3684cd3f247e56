"""The papers' claims and the one set of rules that decides whether each held.

``sknc demo`` and the real-data reproductions (``benchmarks/reproduce_*.py``)
test the same claims; they call these functions, so a claim means the same
thing, is judged by the same rule and is stored in the same form everywhere.

Every verdict is a dict (the claim schema)::

    {"paper": ..., "title": ..., "claim": ...,     # from CLAIMS
     "status": "held" | "partly held" | "did not hold" | "inconclusive" | "not run",
     "held": True | False | None,                  # the status as a bool (None: neither)
     "verdict": "the numbers behind the status"}

The rules:

- **collapse_generalizes**: CDNV at the last checkpoint below that at the
  first on every feature set (held), on some (partly held), on none.
- **fewshot_follows_cdnv**: for every shot count, few-shot accuracy at the
  last checkpoint above the first and Spearman's rho between novel-class
  CDNV and accuracy over the checkpoints negative.
- **source_training_helps**: the source-trained backbone beats raw pixels
  and lower novel CDNV goes with higher accuracy across feature sets (both:
  held; one: partly held).
- **collapse_predicts_transfer**: on every task NC1 and linear-probe
  accuracy are significantly anti-correlated (Kendall tau < 0, p < 0.05),
  and, where a subgroup of candidates is given (e.g. the ImageNet backbones
  alone), the sign holds within it too (held); a negative correlation
  somewhere (partly held); none (did not hold); no finite correlation
  (fewer than three candidates, constant values: inconclusive).
- **nc1_among_scores**: NC1's mean weighted Kendall tau (over the data
  sets) ranks in the top quarter of the transferability scores against
  every ground truth (held); in the top half against at least one (partly
  held); otherwise did not hold; NC1 without a finite tau: inconclusive.
  Ranks count the scores with a finite tau, ties in NC1's favour; of n
  scores the top quarter is ranks 1 .. ceil(n/4), the top half 1 .. ceil(n/2).
- **scl_ft_efficient**: SCL-FT trains at most 10% of full fine-tuning's
  parameters and is never clearly below full fine-tuning (held); at most
  10% and level or better in some regime (partly held).
- **scl_ft_collapse**: SCL-FT's training NC1 clearly below Layer FT's
  everywhere and its accuracy never clearly lower (held); a clearly lower
  NC1 or a clearly higher accuracy somewhere (partly held).
- **peft_level_with_scl**: SCL-FT (the auto block) against each PEFT
  baseline in every setting: no clear difference anywhere (held); at most a
  quarter of the comparisons clearly better, and at most a quarter clearly
  worse (partly held).
- **auto_block**: the auto block's mean accuracy is within one standard
  error (of the best block's mean) of the best block of a sweep in every
  setting (held), in some (partly held).

"Clearly" (:func:`compare_over_seeds`): a difference of means counts only
when it exceeds twice its standard error over the training seeds; with a
single seed there is no standard error and any difference counts.
"""

import numpy as np

from ._format import finite, num, percent, ratio

__all__ = [
    "CLAIMS",
    "PEFT_BASELINES",
    "STATUSES",
    "compare_over_seeds",
    "make_claim",
    "verdict_collapse_generalizes",
    "verdict_collapse_predicts_transfer",
    "verdict_nc1_among_scores",
    "verdict_auto_block",
    "verdict_fewshot_follows_cdnv",
    "verdict_peft_level_with_scl",
    "verdict_scl_ft_collapse",
    "verdict_scl_ft_efficient",
    "verdict_source_training_helps",
]

STATUSES = ("held", "partly held", "did not hold", "inconclusive", "not run")
_HELD = {"held": True, "did not hold": False}

_GALANTI = "Galanti et al., ICLR 2022"
_LI = "Li et al., TMLR 2024"

#: The claims tested, by key: the paper, a title and the claim in words.
CLAIMS = {
    "collapse_generalizes": dict(
        paper=_GALANTI,
        title="Collapse generalises to unseen samples and to new classes",
        claim="While a network is trained on source classes, the CDNV of its features falls "
        "on its training samples, on unseen samples of those classes and on new classes.",
    ),
    "fewshot_follows_cdnv": dict(
        paper=_GALANTI,
        title="Lower novel-class CDNV, better few-shot NCC accuracy",
        claim="As the novel-class CDNV falls during training, nearest-class-centre few-shot "
        "accuracy on the novel classes rises.",
    ),
    "source_training_helps": dict(
        paper=_GALANTI,
        title="Source-trained features beat raw pixels for few-shot learning",
        claim="Features of a network trained on many source classes give much better "
        "few-shot NCC accuracy on new classes than the raw input; across feature "
        "extractors, lower novel-class CDNV goes with higher few-shot accuracy.",
    ),
    "collapse_predicts_transfer": dict(
        paper=_LI,
        title="More collapse on the downstream data, better linear-probe transfer",
        claim="The lower the NC1 of a backbone's frozen features on the downstream training "
        "data, the higher its linear-probe accuracy, so NC1 ranks backbones without "
        "training anything.",
    ),
    "nc1_among_scores": dict(
        paper=_LI + ", against the transferability-estimation field",
        title="NC1 ranks backbones as well as the field's transferability scores",
        claim="The NC1 of a backbone's frozen features on the downstream training data ranks "
        "candidate backbones by their transfer accuracy (weighted Kendall tau) as well as "
        "the field's transferability scores (LogME, NCTI, SFDA, ...) do.",
    ),
    "scl_ft_efficient": dict(
        paper=_LI,
        title="SCL-FT: >= 90% fewer trainable parameters, competitive accuracy, "
        "robust to scarce data",
        claim="Fine-tuning one intermediate block and the classifier with a skip connection "
        "(SCL-FT) trains at least 90% fewer parameters than full fine-tuning and matches "
        "or beats it, in particular when the downstream training set is small.",
    ),
    "scl_ft_collapse": dict(
        paper=_LI,
        title="The skip connection induces collapse and helps over Layer FT",
        claim="Adding the skip connection to Layer FT makes the fine-tuned features collapse "
        "more on the downstream training data (lower NC1) and improves accuracy.",
    ),
    "peft_level_with_scl": dict(
        paper="issue 16 / Lessons from a unifying PEFT study (CVPR 2025)",
        title="With the same tuning budget, SCL-FT and the field's PEFT baselines are level",
        claim="Tuned with the same learning-rate grid, epochs and data, SCL-FT is neither "
        "clearly better nor clearly worse than BitFit, norm tuning, LoRA and last-2-blocks.",
    ),
    "auto_block": dict(
        paper="Li et al., TMLR 2024 (layer choice by collapse)",
        title="The block chosen by collapse is as good as the best block",
        claim="SCL-FT on the block chosen from layer-wise NC1 (tuned_block='auto') is within "
        "one standard error of the best single block of the sweep.",
    ),
}

#: The parameter-efficient baselines SCL-FT is compared with (row names of
#: ``benchmarks/reproduce_peft.py``'s summary).
PEFT_BASELINES = ("bitfit", "norm", "lora-r4", "lora-r16", "last-2")

_WORDS = {1: "better", 0: "level", -1: "worse"}
_NC1_WORDS = {1: "lower", 0: "level", -1: "higher"}
_NOISE_RULE = (
    "A difference counts as better or worse only when it exceeds twice its "
    "standard error over the training seeds."
)
_ONE_SEED = " With one training seed there is no standard error: any difference counts."


def make_claim(key, status, verdict):
    """A verdict in the claim schema (see the module docstring).

    Parameters
    ----------
    key : str
        One of :data:`CLAIMS`.
    status : str
        One of :data:`STATUSES`.
    verdict : str
        The numbers behind the status, in words.

    Returns
    -------
    dict
    """
    if key not in CLAIMS:
        raise ValueError(f"unknown claim {key!r}; expected one of {sorted(CLAIMS)}.")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}.")
    return {**CLAIMS[key], "status": status, "held": _HELD.get(status), "verdict": verdict}


def compare_over_seeds(a, b, key):
    """+1 / -1 when ``a[key]`` is clearly above / below ``b[key]`` over the seeds, else 0.

    ``a`` and ``b`` are summaries over training seeds with ``key`` (the
    mean), ``f"{key}_std"`` (the standard deviation over seeds, None for
    one seed) and ``n_seeds``. Clearly: by more than twice the standard
    error of the difference, ``2 * sqrt((sd_a**2 + sd_b**2) / n)``.
    """
    diff = (a[key] - b[key]) if finite(a[key]) and finite(b[key]) else float("nan")
    n = max(int(a.get("n_seeds") or 1), 1)
    sa, sb = a.get(f"{key}_std"), b.get(f"{key}_std")
    se = np.sqrt(((sa or 0.0) ** 2 + (sb or 0.0) ** 2) / n)
    if not finite(diff):
        return 0
    return int(np.sign(diff)) if abs(diff) > 2 * se else 0


def verdict_collapse_generalizes(epochs, cdnv, labels, cdnv_corrected=None):
    """Galanti et al.: CDNV falls on training samples, unseen samples and new classes.

    Parameters
    ----------
    epochs : sequence of int
        The checkpoints' epochs.
    cdnv : dict
        ``{"source_train": [...], "source_test": [...], "novel": [...]}``,
        CDNV per checkpoint.
    labels : dict
        The same keys -> names used in the text (e.g. ``"novel-class"``).
    cdnv_corrected : dict or None, default=None
        The same keys -> bias-corrected CDNV per checkpoint
        (``sknc.metrics.cdnv(..., bias="corrected")``). The sets have
        different numbers of samples per class, which biases the plug-in
        CDNV; when given and finite at the last checkpoint, the closing
        comparison between the sets uses these.

    Returns
    -------
    dict
        The claim (see :func:`make_claim`).
    """
    parts, n_fell = [], 0
    for key, label in labels.items():
        v = np.asarray([np.nan if x is None else x for x in cdnv[key]], float)
        fell = v[-1] < v[0]
        n_fell += bool(fell)
        text = f"{label} {num(v[0])} to {num(v[-1])}"
        if np.isfinite(v).any():
            best = int(np.nanargmin(v))
            if v[best] < 0.99 * v[-1]:  # the minimum is clearly before the end
                text += f" (lowest {num(v[best])} at epoch {epochs[best]})"
        parts.append(text)
    status = "held" if n_fell == len(labels) else ("partly held" if n_fell >= 1 else "did not hold")
    verdict = f"CDNV from epoch {epochs[0]} to epoch {epochs[-1]}: " + "; ".join(parts) + "."
    across, kind = cdnv, ""
    ends = [] if cdnv_corrected is None else [cdnv_corrected[k][-1] for k in labels]
    if ends and all(finite(v) for v in ends):  # undefined (inf) when classes are too close
        across, kind = cdnv_corrected, "bias-corrected "
    tr, te, nv = (across[k][-1] for k in ("source_train", "source_test", "novel"))
    if finite(tr) and tr > 0 and finite(te) and finite(nv):
        verdict += (
            f" At the end the {labels['novel']} {kind}CDNV is {ratio(nv / tr)} and the "
            f"{labels['source_test']} {kind}CDNV {ratio(te / tr)} the "
            f"{labels['source_train']} {kind}CDNV"
            + (" (corrected for the sets' different sizes)." if kind else ".")
        )
    return make_claim("collapse_generalizes", status, verdict)


def verdict_fewshot_follows_cdnv(shots, correlations, n_way):
    """Galanti et al.: as novel-class CDNV falls over training, few-shot accuracy rises.

    Parameters
    ----------
    shots : dict
        Shot count (str) -> ``{"mean": [...], "ci95": [...]}`` per checkpoint.
    correlations : dict
        Shot count (str) -> :func:`sknc.model_selection.rank_correlation`
        of novel-class CDNV and that accuracy over the checkpoints.
    n_way : int

    Returns
    -------
    dict
    """
    moves, ok = [], True
    for k, s in shots.items():
        moves.append(
            f"{n_way}-way {k}-shot {percent(s['mean'][0])} to {percent(s['mean'][-1])} "
            f"(± {percent(s['ci95'][-1])})"
        )
        rho = correlations[k]["spearman"]
        ok &= bool(s["mean"][-1] > s["mean"][0] and finite(rho) and rho < 0)
    verdict = (
        "Over training, " + " and ".join(moves) + "; Spearman ρ between novel CDNV "
        "and accuracy over the epochs: "
        + ", ".join(
            f"{k}-shot {num(correlations[k]['spearman'], 2)} "
            f"(p = {num(correlations[k]['spearman_pvalue'], 2)})"
            for k in shots
        )
        + "."
    )
    return make_claim("fewshot_follows_cdnv", "held" if ok else "did not hold", verdict)


def verdict_source_training_helps(feature_sets, correlation, n_way, shot):
    """Galanti et al.: source-trained features beat raw pixels; lower CDNV, better accuracy.

    Parameters
    ----------
    feature_sets : list of dict
        One per feature extractor: ``name``, ``kind`` (``"raw"``,
        ``"imagenet"``, ``"own"``), ``cdnv`` (novel classes) and
        ``fewshot`` (shot -> ``{"mean": ...}``); the own backbone's final
        checkpoint is named ``"own backbone (final epoch)"``.
    correlation : dict
        :func:`~sknc.model_selection.rank_correlation` of novel CDNV and
        ``shot``-shot accuracy across the feature sets.
    n_way : int
    shot : str
        The shot count compared.

    Returns
    -------
    dict
    """
    k = shot
    rows = {r["name"]: r for r in feature_sets}
    own = rows["own backbone (final epoch)"]
    raw = rows["raw pixels"]
    imagenet = [r for r in feature_sets if r["kind"] == "imagenet"]
    beats_raw = own["fewshot"][k]["mean"] > raw["fewshot"][k]["mean"]
    text = (
        f"{n_way}-way {k}-shot: own source-trained backbone {percent(own['fewshot'][k]['mean'])} "
        f"(novel CDNV {num(own['cdnv'])}) against raw pixels {percent(raw['fewshot'][k]['mean'])} "
        f"(CDNV {num(raw['cdnv'])})"
    )
    if imagenet:
        best = max(imagenet, key=lambda r: r["fewshot"][k]["mean"])
        text += (
            f" and the best ImageNet backbone, {best['name']}, "
            f"{percent(best['fewshot'][k]['mean'])} (CDNV {num(best['cdnv'])})"
        )
    c = correlation
    text += (
        f". Across the {c['n']} feature sets, Spearman ρ between novel CDNV and "
        f"{k}-shot accuracy is {num(c['spearman'], 2)} "
        f"(p = {num(c['spearman_pvalue'], 2)}),"
        f" Kendall τ {num(c['kendall'], 2)} (p = {num(c['kendall_pvalue'], 2)})."
    )
    order = sorted(feature_sets, key=lambda r: r["cdnv"])
    ranks = {
        kk: 1 + sorted(feature_sets, key=lambda r: -r["fewshot"][kk]["mean"]).index(own)
        for kk in own["fewshot"]
    }
    text += (
        f" The own backbone's novel CDNV ranks {1 + order.index(own)} of {len(feature_sets)} "
        "(1 = lowest); its accuracy ranks "
        + ", ".join(f"{ranks[kk]} ({kk}-shot)" for kk in ranks)
        + "."
    )
    agrees = finite(c["spearman"]) and c["spearman"] < 0
    status = (
        "held" if beats_raw and agrees else "partly held" if beats_raw or agrees else "did not hold"
    )
    return make_claim("source_training_helps", status, text)


def verdict_collapse_predicts_transfer(rankings, task_names, subgroup=None):
    """Li et al.: lower NC1 on the downstream training data, higher linear-probe accuracy.

    Parameters
    ----------
    rankings : dict
        Task -> ``{"table": rows sorted by NC1 (``backbone``, ``nc1``,
        ``accuracy``), "correlations": {"nc1": rank_correlation(...)}}``,
        as :func:`sknc.model_selection.rank_backbones` gives them.
    task_names : dict
        Task -> its name in the text.
    subgroup : dict or None, default=None
        ``{"label": "ImageNet", "key": "imagenet_only"}``: each ranking's
        ``key`` entry is the rank correlation within that subgroup of
        candidates, whose sign must agree too.

    Returns
    -------
    dict
    """
    texts, signs, signif, within, assessable = [], [], [], [], []
    for task, r in rankings.items():
        k = r["correlations"]["nc1"]
        n = len(r["table"])
        assessable.append(finite(k["spearman"]))
        signs.append(finite(k["spearman"]) and k["spearman"] < 0)
        signif.append(
            finite(k["kendall_pvalue"]) and k["kendall_pvalue"] < 0.05 and k["kendall"] < 0
        )
        best_nc1 = r["table"][0]
        best_acc = max(r["table"], key=lambda row: row["accuracy"])
        text = (
            f"{task_names[task]}: over {n} backbones Spearman ρ = {num(k['spearman'], 2)} "
            f"(p = {num(k['spearman_pvalue'], 2)}), Kendall τ = {num(k['kendall'], 2)} "
            f"(p = {num(k['kendall_pvalue'], 2)})"
        )
        if subgroup is not None:
            i = r[subgroup["key"]]
            within.append(finite(i["spearman"]) and i["spearman"] < 0)
            text += f", among the {i['n']} {subgroup['label']} backbones alone ρ = " + num(
                i["spearman"], 2
            )
        text += (
            f"; lowest NC1: {best_nc1['backbone']} ({percent(best_nc1['accuracy'])}), "
            f"best probe: {best_acc['backbone']} ({percent(best_acc['accuracy'])})"
        )
        texts.append(text)
    verdict = "; ".join(texts) + "."
    if not any(assessable):
        status = "inconclusive"
        verdict += " No rank correlation could be computed (fewer than three candidates, or "
        verdict += "a constant NC1 or accuracy)."
    elif all(signif) and all(within):
        status = "held"
    elif any(signs):
        status = "partly held"
    else:
        status = "did not hold"
    if all(signif) and not all(within):
        verdict += (
            f" The correlation is significant over all backbones, but it comes "
            f"from the gap between the {subgroup['label']} and the own backbones: NC1 does "
            f"not order the {subgroup['label']} backbones by accuracy."
        )
    return make_claim("collapse_predicts_transfer", status, verdict)


def verdict_nc1_among_scores(mean_taus, score_names=None):
    """Li et al.'s NC1 against the field's scores: where its mean weighted tau ranks.

    Parameters
    ----------
    mean_taus : dict
        Ground truth (e.g. ``"linear-probe"``, ``"fine-tuned"``) -> score name
        -> mean weighted Kendall tau over the data sets (NaN/None when a score
        has none), as :func:`sknc.model_selection.evaluate_rankings` gives
        them (``.mean[score]["weighted_tau"]``). Must hold ``"nc1"``.
    score_names : dict or None, default=None
        Score name -> its name in the text.

    Returns
    -------
    dict
        The claim schema; the rule is in the module docstring.

    Examples
    --------
    >>> c = verdict_nc1_among_scores(
    ...     {"linear-probe": {"nc1": 0.55, "logme": 0.5, "knn": 0.6, "gbc": 0.1}}
    ... )
    >>> c["status"]
    'partly held'
    """
    names = score_names or {}
    texts, places = [], []
    for truth, taus in mean_taus.items():
        taus = {s: float(v) for s, v in taus.items() if finite(v)}
        if "nc1" not in taus:
            texts.append(f"against {truth} accuracy NC1 has no finite weighted τ")
            continue
        above = sorted((s for s in taus if taus[s] > taus["nc1"]), key=lambda s: -taus[s])
        rank, n = len(above) + 1, len(taus)
        places.append((rank, n))
        text = (
            f"against {truth} accuracy NC1 ranks {rank} of {n} scores "
            f"(mean weighted τ {num(taus['nc1'], 2)}"
        )
        if above:
            best = above[0]
            text += f"; best {names.get(best, best)} {num(taus[best], 2)}"
            text += "; NC1 loses to " + ", ".join(names.get(s, s) for s in above)
        texts.append(text + ")")
    verdict = "; ".join(texts)
    verdict = verdict[:1].upper() + verdict[1:] + "."
    if not places:
        status = "inconclusive"
    elif len(places) == len(mean_taus) and all(r <= -(-n // 4) for r, n in places):
        status = "held"
    elif any(r <= -(-n // 2) for r, n in places):
        status = "partly held"
    else:
        status = "did not hold"
    verdict += (
        " Rule: held if NC1 is in the top quarter of the scores against every ground truth, "
        "partly held if in the top half against at least one."
    )
    return make_claim("nc1_among_scores", status, verdict)


def _regime_label(regime, regime_names):
    return regime_names.get(regime, regime)


def _noise_rule(rows):
    one_seed = all(int(r.get("n_seeds") or 1) == 1 for r in rows)
    return _NOISE_RULE + (_ONE_SEED if one_seed else "")


def verdict_scl_ft_efficient(finetune, task_names, regime_names=None):
    """Li et al.: SCL-FT trains <= 10% of full FT's parameters and is not clearly worse.

    Parameters
    ----------
    finetune : dict
        Task -> summary rows over the training seeds, one per (``regime``,
        ``method``): ``accuracy``, ``accuracy_std`` (None for one seed),
        ``n_seeds``, ``trainable_vs_full``.
    task_names : dict
        Task -> its name in the text.
    regime_names : dict or None, default=None
        Regime -> its name in the text (default ``{"full": "full", "scarce": "10%"}``).

    Returns
    -------
    dict
    """
    regime_names = {"full": "full", "scarce": "10%", **(regime_names or {})}
    texts, outcome, small, all_rows = [], {}, [], []
    for task, rows in finetune.items():
        all_rows += rows
        by = {(r["regime"], r["method"]): r for r in rows}
        regimes = list(dict.fromkeys(r["regime"] for r in rows))
        parts = []
        for regime in regimes:
            scl, full = by[(regime, "scl-ft")], by[(regime, "full-ft")]
            sign = compare_over_seeds(scl, full, "accuracy")
            outcome.setdefault(regime, []).append(sign)
            small.append(scl["trainable_vs_full"] <= 0.1)
            parts.append(
                f"{_regime_label(regime, regime_names)} data SCL-FT "
                f"{_pm(scl)} vs full FT {_pm(full)} ({_WORDS[sign]})"
            )
        scl = by[(regimes[0], "scl-ft")]
        texts.append(
            f"{task_names[task]}: "
            + ", ".join(parts)
            + f" (SCL-FT trains {percent(scl['trainable_vs_full'])} of full FT's parameters)"
        )
    not_worse = [[sign >= 0 for sign in signs] for signs in outcome.values()]
    if all(small) and all(all(v) for v in not_worse):
        status = "held"
    elif all(small) and any(any(v) for v in not_worse):
        status = "partly held"
    else:
        status = "did not hold"
    verdict = "; ".join(texts) + ". " + _noise_rule(all_rows)
    return make_claim("scl_ft_efficient", status, verdict)


def verdict_scl_ft_collapse(finetune, task_names, regime_names=None):
    """Li et al.: the skip connection lowers training NC1 over Layer FT, without hurting accuracy.

    Parameters are those of :func:`verdict_scl_ft_efficient` (rows with
    ``train_nc1`` and ``train_nc1_std`` too).

    Returns
    -------
    dict
    """
    regime_names = {"full": "full", "scarce": "10%", **(regime_names or {})}
    texts, nc1_signs, acc_signs, all_rows = [], [], [], []
    for task, rows in finetune.items():
        all_rows += rows
        by = {(r["regime"], r["method"]): r for r in rows}
        parts = []
        for regime in dict.fromkeys(r["regime"] for r in rows):
            scl, layer = by[(regime, "scl-ft")], by[(regime, "layer-ft")]
            nc1_signs.append(-compare_over_seeds(scl, layer, "train_nc1"))  # +1: lower NC1
            acc_signs.append(compare_over_seeds(scl, layer, "accuracy"))
            parts.append(
                f"{_regime_label(regime, regime_names)} data: train NC1 "
                f"{num(scl['train_nc1'])} vs {num(layer['train_nc1'])} "
                f"({_NC1_WORDS[nc1_signs[-1]]}), accuracy {_pm(scl)} vs {_pm(layer)} "
                f"({_WORDS[acc_signs[-1]]})"
            )
        texts.append(f"{task_names[task]} (SCL-FT vs Layer FT): " + "; ".join(parts))
    if all(v > 0 for v in nc1_signs) and all(v >= 0 for v in acc_signs):
        status = "held"
    elif any(v > 0 for v in nc1_signs) or any(v > 0 for v in acc_signs):
        status = "partly held"
    else:
        status = "did not hold"
    verdict = ". ".join(texts) + ". " + _noise_rule(all_rows)
    return make_claim("scl_ft_collapse", status, verdict)


def _by_backbone_task(summary):
    out = {}
    for r in summary:
        out.setdefault(r.get("backbone"), {}).setdefault(r["task"], []).append(r)
    return out


def verdict_peft_level_with_scl(
    summary,
    task_names,
    *,
    backbone_names=None,
    regime_names=None,
    baselines=PEFT_BASELINES,
    method="scl-ft-auto",
):
    """SCL-FT is level with the field's PEFT baselines under the same tuning budget.

    Parameters
    ----------
    summary : list of dict
        Summary rows over the training seeds (as :func:`compare_finetuning`
        gives them, with ``backbone`` and ``task`` added): ``method``,
        ``regime``, ``accuracy``, ``accuracy_std``, ``n_seeds``.
    task_names : dict
        Task -> its name in the text.
    backbone_names : dict or None, default=None
        Backbone -> its name in the text (default: the backbone itself).
    regime_names : dict or None, default=None
        Regime -> its name in the text (default ``{"full": "full", "scarce": "10%"}``).
    baselines : sequence of str, default=PEFT_BASELINES
        The methods SCL-FT is compared with.
    method : str, default="scl-ft-auto"
        SCL-FT's row name.

    Returns
    -------
    dict
        The claim; "clearly" is :func:`compare_over_seeds`.
    """
    backbone_names = backbone_names or {}
    regime_names = {"full": "full", "scarce": "10%", **(regime_names or {})}
    texts, signs = [], []
    for backbone, per_task in _by_backbone_task(summary).items():
        for task, rows in per_task.items():
            by = {(r["regime"], r["method"]): r for r in rows}
            for regime in dict.fromkeys(r["regime"] for r in rows):
                scl = by[(regime, method)]
                parts = []
                for base in baselines:
                    sign = compare_over_seeds(scl, by[(regime, base)], "accuracy")
                    signs.append(sign)
                    parts.append(f"{base} {_pm(by[(regime, base)])} ({_WORDS[sign]})")
                texts.append(
                    f"{backbone_names.get(backbone, backbone)} {task_names[task]} "
                    f"{_regime_label(regime, regime_names)}: SCL-FT {_pm(scl)} vs "
                    + ", ".join(parts)
                )
    n_better, n_worse = signs.count(1), signs.count(-1)
    if n_better == n_worse == 0:
        status = "held"
    elif max(n_better, n_worse) <= len(signs) // 4:
        status = "partly held"
    else:
        status = "did not hold"
    return make_claim(
        "peft_level_with_scl",
        status,
        f"SCL-FT (auto block) clearly better in {n_better}, level in {signs.count(0)}, clearly "
        f"worse in {n_worse} of {len(signs)} comparisons (held: all level; partly: at most a "
        "quarter not level). " + "; ".join(texts) + ". " + _NOISE_RULE,
    )


def verdict_auto_block(summary, task_names, *, backbone_names=None, regime_names=None):
    """The block chosen by collapse is within one standard error of the best swept block.

    Parameters
    ----------
    summary : list of dict
        Summary rows; those of method ``"scl-ft-auto"`` carry ``sweep``, the
        summaries (``tuned_block``, ``accuracy``, ``accuracy_std``,
        ``n_seeds``) of SCL-FT on each swept block, and their own
        ``tuned_block`` and accuracy.
    task_names, backbone_names, regime_names : dict
        As in :func:`verdict_peft_level_with_scl`.

    Returns
    -------
    dict
        The claim, with ``within_one_se``: the share of the settings where
        the auto block is within one standard error (None without sweeps).
    """
    backbone_names = backbone_names or {}
    regime_names = {"full": "full", "scarce": "10%", **(regime_names or {})}
    hits, texts = [], []
    for r in summary:
        if r["method"] != "scl-ft-auto" or not r.get("sweep"):
            continue
        best = max(r["sweep"], key=lambda s: s["accuracy"])
        se = (best["accuracy_std"] or 0.0) / np.sqrt(max(best["n_seeds"], 1))
        hit = r["accuracy"] >= best["accuracy"] - se
        hits.append(hit)
        texts.append(
            f"{backbone_names.get(r['backbone'], r['backbone'])} {task_names[r['task']]} "
            f"{_regime_label(r['regime'], regime_names)}: auto {r['tuned_block']} "
            f"{_pm(r)} vs best {best['tuned_block']} {_pm(best)} "
            f"({'within' if hit else 'outside'} 1 SE)"
        )
    status = "held" if hits and all(hits) else "partly held" if any(hits) else "did not hold"
    claim = make_claim(
        "auto_block",
        status,
        f"the auto block is within one standard error of the best swept block in "
        f"{sum(hits)} of {len(hits)} settings; " + "; ".join(texts) + ".",
    )
    claim["within_one_se"] = float(np.mean(hits)) if hits else None
    return claim


def _pm(row):
    """Mean accuracy ± std over the seeds of a fine-tuning summary row."""
    if not finite(row.get("accuracy_std")):
        return percent(row["accuracy"])
    return f"{100 * row['accuracy']:.1f} ± {100 * row['accuracy_std']:.1f}%"
