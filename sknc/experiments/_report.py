"""Markdown reports rendered from a results dict (the one written to ``results.json``).

Contents
--------
render_demo_report(results)
    ``report.md`` of ``sknc demo``: one section per paper claim with the
    claim, the figure, a table of the measured numbers and the verdict.
render_evaluate_report(results)
    ``report.md`` of ``sknc evaluate``: per-block collapse, linear probe,
    few-shot accuracy, the transferability scores of the penultimate
    features, the suggested ``tuned_block``.
FORMATTERS
    The only ways a number is written in a report. Every number in a report
    is one of these applied to a number of ``results``, which the tests
    check; the renderers never compute a number themselves.
"""

import json

from ._format import FORMATTERS, SCORE_LABELS, count, finite, num, pct, pval, secs

__all__ = ["FORMATTERS", "render_demo_report", "render_evaluate_report"]

REFERENCES_HEADING = "## References"

_GALANTI = (
    "Galanti, György, Hutter. *On the Role of Neural Collapse in Transfer Learning.* "
    "ICLR 2022, arXiv:2112.15121."
)
_LI = (
    "Li, Liu, Zhou, Lu, Fernandez-Granda, Zhu, Qu. *Understanding and Improving Transfer "
    "Learning of Deep Models via Neural Collapse.* TMLR 2024, arXiv:2212.12206."
)


def _py(value):
    """A Python literal for ``value``, strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    return repr(value)


def finetuning_call(results, tuned_block):
    """The ``FineTuningClassifier(...)`` call matching an evaluation's backbone and preprocessing."""
    cfg = results["config"]
    args = [_py(cfg["model"]), 'method="scl-ft"', f"tuned_block={_py(tuned_block)}"]
    if cfg.get("max_length"):  # a text encoder: weights and tokenizer come with the model
        return "FineTuningClassifier(" + ", ".join(args) + ")"
    if cfg.get("weights"):
        args.append(f"weights={_py(cfg['weights'])}")
    if cfg.get("pretrained"):
        args.append("pretrained=True")
    if cfg.get("model_kwargs"):
        args.append(f"model_kwargs={_py(cfg['model_kwargs'])}")
    prep = cfg.get("preprocessing")
    if prep:
        size = prep["input_size"]
        args.append(f"input_size={_py(tuple(size[1:]) if size[1] != size[2] else size[1])}")
        args.append(f"crop_pct={_py(prep['crop_pct'])}")
        args.append(f"interpolation={_py(prep['interpolation'])}")
        args.append(f"mean={_py(tuple(prep['mean']))}")
        args.append(f"std={_py(tuple(prep['std']))}")
    else:
        args.append(f"input_size={_py(cfg['input_size'][0])}")
    return "FineTuningClassifier(" + ", ".join(args) + ")"


def _pm(mean, ci):
    return f"{pct(mean)}% ± {pct(ci)}%"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _files_and_timing(r):
    """The closing section of both reports: files written, seconds per step, command."""
    return [
        "## Files and timing\n",
        _table(["file", "contents"], [[f"`{name}`", desc] for name, desc in r["files"].items()]),
        "",
        _table(
            ["step", "seconds"], [[k.replace("_", " "), secs(v)] for k, v in r["timing"].items()]
        ),
        "",
        f"Re-run with `{r['command_line']}`.\n",
    ]


def _verdict(claim):
    mark = {True: "✅", False: "❌", None: "➖"}[claim.get("held")]
    return f"**Verdict** {mark} {claim['status']}: {claim['verdict']}"


def _figure(results, key, alt):
    return f"![{alt}]({results['figures'][key]})"


# ----------------------------------------------------------------------------
# sknc demo
# ----------------------------------------------------------------------------
def render_demo_report(results):
    """Render the ``sknc demo`` report (Markdown) from its results dict.

    Parameters
    ----------
    results : dict
        The dict written to ``results.json``.

    Returns
    -------
    str
    """
    r = results
    out = []
    out.append("# sknc demo: neural collapse on new classes, and what it predicts about transfer\n")
    out.append(
        "This run trains a small network from scratch on the *source* classes of the "
        "embedded glyph dataset (characters drawn by many typefaces), keeps its weights "
        "after every epoch, and tests two papers' claims on each checkpoint: that the "
        "features collapse on *new* classes too, which makes a nearest-class-centre "
        "classifier a good few-shot learner (Galanti et al.), and that collapse on a "
        "downstream training set predicts transfer, which a parameter-efficient "
        "fine-tuner can exploit when downstream data is scarce (Li et al.). Every number "
        "below is read from `results.json`; every verdict is computed from them.\n"
    )
    for part in (_demo_setup, _demo_collapse, _demo_fewshot, _demo_transfer, _demo_finetune):
        out += part(r)
    out += _files_and_timing(r)
    out.append(REFERENCES_HEADING + "\n")
    out.append(f"- {_GALANTI}\n- {_LI}\n")
    return "\n".join(out)


def _demo_setup(r):
    """The set-up table of the demo report."""
    cfg, data, timing, env = r["config"], r["data"], r["timing"], r["environment"]
    src, nov, ds, sc = data["source"], data["novel"], data["downstream"], data["scarce"]
    out = []
    out.append("## Set-up\n")
    out.append(
        _table(
            ["", ""],
            [
                [
                    "backbone",
                    f"`{cfg['model']}` (timm, random initialisation), "
                    f"{num(cfg['image_size'])} × {num(cfg['image_size'])} px inputs",
                ],
                [
                    "source classes",
                    f"{num(src['n_classes'])} glyph classes: {count(src['n_train'])} "
                    f"training images; {count(src['n_test'])} test images drawn by "
                    f"{num(src['n_test_typefaces'])} held-out typefaces",
                ],
                [
                    "novel classes",
                    f"{num(nov['n_classes'])} glyph classes never trained on, "
                    f"{count(nov['n_images'])} images",
                ],
                [
                    "pre-training",
                    f"{num(cfg['epochs'])} epochs, AdamW, learning rate "
                    f"{num(cfg['lr'])} (cosine schedule), batch {num(cfg['batch_size'])}",
                ],
                [
                    "checkpoints",
                    f"epoch {num(r['collapse']['epoch'][0])} (initial weights) to epoch "
                    f"{num(r['collapse']['epoch'][-1])}, one per epoch",
                ],
                [
                    "transfer data",
                    f"{ds['name']}: {num(ds['n_classes'])} classes, "
                    f"{count(ds['n_train'])} training / {count(ds['n_test'])} "
                    "test images",
                ],
                [
                    "scarce fine-tuning data",
                    f"{sc['name']}: {pct(sc['fraction'])}% of "
                    f"{count(sc['n_train_full'])} training images = "
                    f"{count(sc['n_train'])} images, "
                    f"{count(sc['n_test'])} test images",
                ],
                [
                    "compute",
                    f"{env['device']}, {num(env['threads'])} torch threads, seed "
                    f"{num(cfg['seed'])}, total {secs(timing['total'])} s",
                ],
            ],
        )
    )
    out.append("")
    return out


def _demo_collapse(r):
    """Galanti et al.: CDNV and NC1 per epoch on the three sets."""
    out = []
    claim = r["claims"]["collapse_generalizes"]
    col = r["collapse"]
    out.append(f"## {claim['title']}\n")
    out.append(f"**Claim** ({claim['paper']}). {claim['claim']}\n")
    out.append(_figure(r, "cdnv_curves", "CDNV and NC1 per epoch") + "\n")
    rows = []
    for i, ep in enumerate(col["epoch"]):
        rows.append(
            [num(ep)]
            + [
                num(col[part][m][i])
                for m in ("cdnv", "nc1")
                for part in ("source_train", "source_test", "novel")
            ]
        )
    out.append(
        _table(
            [
                "epoch",
                "CDNV source train",
                "CDNV source test",
                "CDNV novel",
                "NC1 source train",
                "NC1 source test",
                "NC1 novel",
            ],
            rows,
        )
    )
    out.append("")
    if all("cdnv_corrected" in col[part] for part in ("source_train", "source_test", "novel")):
        out.append(
            "The three sets have different numbers of images per class, which biases the "
            "plug-in CDNV above (fewer images, lower CDNV); the bias-corrected CDNV "
            "(unbiased within-class variances and squared distances, "
            '`sknc.metrics.cdnv(..., bias="corrected")`) compares them fairly. At the '
            f"last epoch: source train {num(col['source_train']['cdnv_corrected'][-1])}, "
            f"source test {num(col['source_test']['cdnv_corrected'][-1])}, novel classes "
            f"{num(col['novel']['cdnv_corrected'][-1])}"
            + (
                " (n/a: undefined, as some classes are closer than their sample sizes can resolve)"
                if any(col[p]["cdnv_corrected"][-1] is None for p in col if p != "epoch")
                else ""
            )
            + ".\n"
        )
    out.append(_verdict(claim) + "\n")
    return out


def _demo_fewshot(r):
    """Galanti et al.: few-shot accuracy against novel-class CDNV."""
    out = []
    claim = r["claims"]["fewshot_follows_cdnv"]
    fs = r["few_shot"]
    out.append(f"## {claim['title']}\n")
    out.append(f"**Claim** ({claim['paper']}). {claim['claim']}\n")
    out.append(_figure(r, "fewshot_vs_cdnv", "few-shot accuracy against novel-class CDNV") + "\n")
    shots = list(fs["shots"])
    header = ["epoch", "CDNV novel"] + [
        f"{num(fs['n_way'])}-way {num(fs['shots'][k]['n_shot'])}-shot" for k in shots
    ]
    rows = []
    for i, ep in enumerate(fs["epoch"]):
        rows.append(
            [num(ep), num(fs["novel_cdnv"][i])]
            + [_pm(fs["shots"][k]["mean"][i], fs["shots"][k]["ci95"][i]) for k in shots]
        )
    out.append(
        f"Nearest-class-centre accuracy over {count(fs['n_episodes'])} episodes per protocol "
        f"({num(fs['n_query'])} queries per class), mean ± {num(fs['confidence_level'])}% "
        f"confidence interval; "
        "rank correlation over epochs between novel-class CDNV and accuracy: Spearman "
        + ", ".join(
            f"{pval(fs['correlations'][k]['spearman'])} ({num(fs['shots'][k]['n_shot'])}-shot)"
            for k in shots
        )
        + ".\n"
    )
    out.append(_table(header, rows))
    out.append("")
    out.append(_verdict(claim) + "\n")
    return out


def _demo_transfer(r):
    """Li et al.: NC1 (and every other score) against linear-probe accuracy."""
    out = []
    claim = r["claims"]["collapse_predicts_transfer"]
    tr = r["transfer"]
    out.append(f"## {claim['title']}\n")
    out.append(f"**Claim** ({claim['paper']}). {claim['claim']}\n")
    out.append(_figure(r, "nc_vs_accuracy", "NC1 against linear-probe accuracy") + "\n")
    out.append(
        f"Each checkpoint is a candidate backbone. NC1 (and CDNV) are measured on its frozen "
        f"penultimate features of the training images of the transfer data "
        f"({tr['downstream']}); a linear probe (standardised features, logistic regression) "
        f"trained on the same features is scored on the test images. Ranking with "
        f"`sknc.model_selection.rank_backbones`.\n"
    )
    rows = [
        [num(ep), num(tr["nc1"][i]), num(tr["cdnv"][i]), f"{pct(tr['accuracy'][i])}%"]
        for i, ep in enumerate(tr["epoch"])
    ]
    out.append(
        _table(
            ["epoch", "NC1 (downstream train)", "CDNV (downstream train)", "linear-probe accuracy"],
            rows,
        )
    )
    out.append("")
    rows = []
    for metric, c in tr["correlations"].items():
        rows.append(
            [
                f"{metric.upper()} vs accuracy",
                pval(c["spearman"]),
                pval(c["spearman_pvalue"]),
                pval(c["kendall"]),
                pval(c["kendall_pvalue"]),
            ]
        )
    out.append(_table(["", "Spearman ρ", "p-value", "Kendall τ", "p-value"], rows))
    out.append("")
    out += _demo_scores(tr)
    out.append(_verdict(claim) + "\n")
    return out


def _demo_scores(tr):
    """Every transferability score's ranking of the checkpoints, NC1's beside them."""
    evaluation = tr.get("evaluation")
    if not evaluation:  # results written before the demo computed the other scores
        return []
    out = [
        "The field's other transferability scores, computed from the same features "
        "(`rank_backbones(..., scores=...)`), are judged by the field's protocol: "
        "weighted Kendall τ between each score and the probe accuracy (one: the same "
        "order, higher-ranked checkpoints weigh more), and top-1 regret, the accuracy "
        "lost by taking the checkpoint the score ranks first instead of the best one. "
        "NC1 and CDNV are negated (lower is better).\n"
    ]
    rows = []
    order = sorted(
        evaluation,
        key=lambda k: (
            -evaluation[k]["weighted_tau"]
            if finite(evaluation[k]["weighted_tau"])
            else float("inf")
        ),
    )
    for key in order:
        e = evaluation[key]
        name = f"**{key.upper()}**" if key in ("nc1", "cdnv") else key
        rows.append(
            [
                name,
                pval(e["weighted_tau"]),
                pval(e["kendall"]),
                pval(e["spearman"]),
                f"{pct(e['top1_regret'])} points",
            ]
        )
    out.append(_table(["score", "weighted τ", "Kendall τ", "Spearman ρ", "top-1 regret"], rows))
    out.append("")
    nc1 = evaluation.get("nc1", {}).get("weighted_tau")
    better = [
        k
        for k in order
        if finite(evaluation[k]["weighted_tau"])
        and finite(nc1)
        and evaluation[k]["weighted_tau"] > nc1
    ]
    if finite(nc1):
        out.append(
            f"NC1's weighted τ is {pval(nc1)}; "
            + (
                f"the scores that rank the checkpoints better: {', '.join(better)}.\n"
                if better
                else "no other score ranks the checkpoints better.\n"
            )
        )
    return out


def _demo_finetune(r):
    """Li et al.: the fine-tuning methods on scarce data."""
    sc = r["data"]["scarce"]
    out = []
    claim = r["claims"]["scl_ft_efficient"]
    ft = r["finetune"]
    out.append(f"## {claim['title']}\n")
    out.append(f"**Claim** ({claim['paper']}). {claim['claim']}\n")
    out.append(_figure(r, "finetune_comparison", "fine-tuning comparison") + "\n")
    out.append(
        f"Starting point: the epoch {num(ft['backbone_epoch'])} checkpoint. Each method "
        f"trains with AdamW (epochs: {num(ft['epochs'])}, learning rate {num(ft['lr'])}, "
        f"batch {num(ft['batch_size'])}) on the {count(sc['n_train'])} scarce "
        f"{sc['name']} training images and is scored on the {count(sc['n_test'])} test "
        f"images (`sknc.finetune.FineTuningClassifier`). NC1 is that of the head-input "
        f"features on the training images after fine-tuning.\n"
    )
    rows = []
    for m in ft["methods"]:
        rows.append(
            [
                f"`{m['method']}`" + (f" (`{m['tuned_block']}`)" if m.get("tuned_block") else ""),
                f"{pct(m['accuracy'])}%",
                count(m["n_trainable_params"]),
                f"{pct(m['trainable_vs_full'])}%",
                secs(m["seconds"]),
                num(m["train_nc1"]),
            ]
        )
    out.append(
        _table(
            [
                "method",
                "test accuracy",
                "trainable parameters",
                "share of full FT's",
                "seconds",
                "train NC1",
            ],
            rows,
        )
    )
    out.append("")
    out.append(_verdict(claim) + "\n")
    claim = r["claims"]["scl_ft_collapse"]
    out.append(f"### {claim['title']}\n")
    out.append(f"**Claim** ({claim['paper']}). {claim['claim']}\n")
    out.append(_verdict(claim) + "\n")
    return out


# ----------------------------------------------------------------------------
# sknc evaluate
# ----------------------------------------------------------------------------
def render_evaluate_report(results):
    """Render the ``sknc evaluate`` report (Markdown) from its results dict.

    Parameters
    ----------
    results : dict
        The dict written to ``results.json``.

    Returns
    -------
    str
    """
    r = results
    out = _evaluate_header(r)
    out += _evaluate_collapse(r)
    out += _evaluate_tuned_block(r)
    out += _evaluate_transfer(r)
    if r.get("transferability"):
        out += _evaluate_transferability(r)
    out += _files_and_timing(r)
    return "\n".join(out)


def _evaluate_header(r):
    """Title, what was measured on what, preprocessing and notes."""
    cfg, data, timing, env = r["config"], r["data"], r["timing"], r["environment"]
    out = []
    weights = (
        ", its saved weights"
        if cfg.get("max_length")
        else f", weights `{cfg['weights']}`"
        if cfg.get("weights")
        else (", pretrained hub weights" if cfg.get("pretrained") else ", random initialisation")
    )
    out.append(f"# sknc evaluate: `{cfg['model']}` on `{data['path']}`\n")
    out.append(
        f"Frozen features of `{cfg['model']}`{weights}, at "
        + (
            f"most {num(cfg['max_length'])} tokens per text, on "  # ", at most ..."
            if cfg.get("max_length")
            else f"{num(cfg['input_size'][0])} × {num(cfg['input_size'][1])} px, on "
        )
        + f"{count(data['n_images'])} {'texts' if cfg.get('max_length') else 'images'} of "
        f"{num(data['n_classes'])} classes "
        f"({num(data['min_class_size'])} to {num(data['max_class_size'])} "
        f"{'texts' if cfg.get('max_length') else 'images'} per class); "
        f"{env['device']}, {num(env['threads'])} torch threads, {secs(timing['total'])} s. "
        f"Lower NC1, CDNV and NC2 mean more collapse: tighter classes, farther apart.\n"
    )
    prep = cfg.get("preprocessing")
    if prep:
        out.append(
            f"Preprocessing: resize ({prep['interpolation']}) and {prep['crop_mode']} crop "
            f"(crop_pct {num(prep['crop_pct'])}) to "
            f"{num(prep['input_size'][1])} × {num(prep['input_size'][2])} px, normalised with "
            f"mean ({', '.join(num(v) for v in prep['mean'])}) and std "
            f"({', '.join(num(v) for v in prep['std'])})"
            + (
                f"; model options `{json.dumps(cfg['model_kwargs'])}`"
                if cfg.get("model_kwargs")
                else ""
            )
            + ".\n"
        )
    out += [f"- {note}" for note in r.get("notes", [])]
    if r.get("notes"):
        out.append("")
    return out


def _evaluate_collapse(r):
    """The per-block table, with the narrow, undefined and warned layers explained."""
    data = r["data"]
    out = ["## Collapse per block\n"]
    out.append(_figure(r, "layerwise_nc", "NC1, CDNV and NC2 per block") + "\n")
    narrow = [row for row in r["layers"] if not row.get("nc1_comparable", True)]
    rows = [
        [
            f"`{row['layer']}`",
            count(row["n_features"]),
            num(row["nc1"]) + ("†" if not row.get("nc1_comparable", True) else ""),
            num(row["cdnv"]),
            num(row["nc2"]),
        ]
        for row in r["layers"]
    ]
    out.append(_table(["layer", "features", "NC1", "CDNV", "NC2"], rows))
    out.append("")
    if narrow:
        out.append(
            f"† Not comparable: NC1 of a block with fewer features than there are classes "
            f"({num(data['n_classes'])}) measures the within-class spread along the few "
            "directions the class means can span and grows without bound as the width "
            "approaches K − 1, so it is not compared with the NC1 of wider blocks "
            "(CDNV has no such restriction).\n"
        )
    undefined = [row for row in r["layers"] if row.get("error")]
    if undefined:
        out.append("Layers on which the metrics are undefined (shown as n/a):\n")
        out += [f"- `{row['layer']}`: `{row['error']}`" for row in undefined]
        out.append("")
    warned = [row for row in r["layers"] if row.get("warnings")]
    if warned:
        out.append("Warnings of the metrics (the values they concern are not meaningful):\n")
        out += [f"- `{row['layer']}`: `{w}`" for row in warned for w in row["warnings"]]
        out.append("")
    return out


def _evaluate_tuned_block(r):
    """The most collapsed block and the suggested SCL-FT ``tuned_block``."""
    out = []
    best, sug = r["most_collapsed_block"], r["suggested_tuned_block"]
    metric = r.get("block_chosen_by", "nc1")
    if best is None:
        out.append("No block has a finite collapse metric, so none is suggested.\n")
    else:
        out.append(
            f"Most collapsed block: `{best['layer']}` ({metric.upper()} {num(best[metric])})"
            + (
                "; chosen by CDNV, as no block has more features than K − 1."
                if metric == "cdnv"
                else "."
            )
            + " "
        )
    if sug is not None:
        out.append(
            f"As SCL-FT's `tuned_block` (the skip connection carries a block's output to the "
            f"penultimate features, so the last block is left out), start from `{sug['layer']}` "
            f"({metric.upper()} {num(sug[metric])}), the most collapsed of the earlier "
            "blocks, with the same preprocessing:\n"
        )
        out.append(
            "```python\nfrom sknc.finetune import FineTuningClassifier\n"
            f"clf = {finetuning_call(r, sug['layer'])}\n```\n"
        )
    elif best is not None:
        out.append(
            "The model has a single block, so there is no earlier block to suggest as "
            "SCL-FT's `tuned_block`.\n"
        )
    return out


def _evaluate_transfer(r):
    """Linear-probe and few-shot accuracy of the penultimate features."""
    lp, fs = r["linear_probe"], r["few_shot"]
    out = ["## Transfer from the penultimate features\n"]
    out.append(
        _table(
            ["evaluation", "accuracy", "protocol"],
            [
                [
                    "linear probe",
                    f"{pct(lp['accuracy'])}% ± {pct(lp['std'])}%",
                    f"{lp['protocol']} ({num(lp['n_splits'])} folds), standardised features, "
                    f"logistic regression; ± one standard deviation over folds",
                ]
            ]
            + [
                [
                    f"{num(fs['n_way'])}-way {num(s['n_shot'])}-shot",
                    _pm(s["mean"], s["ci95"]),
                    f"nearest class centre, {count(fs['n_episodes'])} episodes, "
                    f"{num(fs['n_query'])} queries per class; ± {num(fs['confidence_level'])}% "
                    "confidence interval",
                ]
                for s in fs["shots"].values()
            ],
        )
    )
    out.append("")
    out += [f"- {note}" for note in fs["notes"]]
    if fs["notes"]:
        out.append("")
    return out


#: How the evaluate report names each score (the keys of ``sknc rank``): PACTran
#: is reported negated (higher is better), k-NN spelled out.
_SCORE_LABELS = {
    **SCORE_LABELS,
    "pactran": "PACTran (negated)",
    "knn": "k-NN leave-one-out accuracy",
}


def _evaluate_transferability(r):
    """The field's transferability scores of the penultimate features, beside NC1/CDNV."""
    tr = r["transferability"]
    out = ["## Transferability scores of the penultimate features\n"]
    out.append(
        "The scores of the field that predict transfer from frozen features "
        "(`sknc.metrics`), on the same penultimate features as NC1 and CDNV. "
        "Each is on its own scale: a score ranks *backbones* on the same data "
        "(`sknc rank --model A --model B ...`), a single value says little "
        "by itself.\n"
    )
    rows = [
        [
            _SCORE_LABELS.get(k, k),
            num(v),
            "higher" if tr["higher_is_better"][k] else "lower",
            secs(tr["seconds"][k]) if tr["seconds"].get(k) is not None else "in the collapse step",
        ]
        for k, v in tr["scores"].items()
    ]
    for k, parts in tr["parts"].items():
        rows += [
            [
                f"{_SCORE_LABELS.get(k, k)} part `{p}`",
                num(v),
                "higher",
                secs(tr["parts_seconds"][k]),
            ]
            for p, v in parts.items()
        ]
    out.append(_table(["score", "value", "better", "seconds"], rows))
    out.append("")
    if tr["parts"]:
        out.append(
            "NCTI and ETran sum their parts after min-max normalisation across a pool of "
            "candidates; with one model only the parts are shown.\n"
        )
    if tr["undefined"]:
        out.append("Scores undefined on these features (n/a above):\n")
        out += [f"- {_SCORE_LABELS.get(k, k)}: `{msg}`" for k, msg in tr["undefined"].items()]
        out.append("")
    return out
