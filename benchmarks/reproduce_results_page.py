"""Build the documentation's results page from the reproductions' ``results.json``.

``docs/results.rst`` is generated, never edited by hand: this script copies
``results.json`` and the figures of ``benchmarks/reproduce_galanti.py``,
``benchmarks/reproduce_li.py``, ``benchmarks/reproduce_transferability.py``
and ``benchmarks/reproduce_peft.py`` into ``docs/results/`` and renders the
page from those copies, so every number on the page is one the scripts wrote
(``tests/test_results_page.py`` re-renders the page from ``docs/results/*.json``
and compares). The Galanti and Li sections show release-scale runs only; the
transferability and PEFT sections show the largest runs that fitted this
project's CPU, and say which preset (scale) each is.

Run (from the repository root, after the reproductions)::

    python benchmarks/reproduce_results_page.py            # copy results, write the page
    python benchmarks/reproduce_results_page.py --check    # exit 1 if the page is stale
    python benchmarks/reproduce_results_page.py \
        --source transferability=benchmarks/results/transferability_medium \
        --source peft=benchmarks/results/peft_compact       # which runs to publish
"""

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _repro_common as rc

from sknc.experiments import _format as fmt
from sknc.experiments._format import SCORE_LABELS, count, finite, num, p_equals, pct

DOCS_DIR = os.path.join(rc.REPO_DIR, "docs")
PAGE = os.path.join(DOCS_DIR, "results.rst")
ASSETS = os.path.join(DOCS_DIR, "results")  # docs/results/<experiment>.json + figures
EXPERIMENTS = ("galanti", "li", "transferability", "peft")
#: Experiments whose page section shows release-scale runs only.
RELEASE_ONLY = ("galanti", "li")
#: The figures of the scripts that do not list theirs in ``res["figures"]``.
FIXED_FIGURES = {"transferability": {"scores": "transferability.png"}}
#: Figures this script draws from an experiment's results (docs/results/<file>).
DRAWN_FIGURES = {"peft": "peft.png"}
PAGE_COMMAND = "python benchmarks/reproduce_results_page.py"
TASK_NAMES = {
    "fashion_mnist": "Fashion-MNIST",
    "emoji_category": "emoji categories",
    "digits": "digits",
    "glyphs_novel": "glyphs (novel classes)",
}
METHOD_NAMES = {
    "linear-probe": "linear probe",
    "layer-ft": "Layer FT",
    "scl-ft": "SCL-FT",
    "full-ft": "full FT",
    "bitfit": "BitFit",
    "norm": "norm tuning",
    "lora-r4": "LoRA r=4",
    "lora-r16": "LoRA r=16",
    "scl-ft-auto": "SCL-FT (auto block)",
    "scl-ft-best": "SCL-FT (best block, oracle)",
    "last-2": "last 2 blocks",
}
BACKBONE_NAMES = {
    "mobilenetv2_100": "MobileNetV2",
    "tf_efficientnet_lite0": "EfficientNet-Lite0",
    "vit_emoji": "ViT (emoji-pretrained)",
}
#: The ImageNet backbones of issue 16's protocol.
ISSUE_16_BACKBONES = ("mobilenetv2_100", "tf_efficientnet_lite0")
#: The ViT of issue 16's protocol, pretrained by reproduce_peft.py (no download).
ISSUE_16_VIT = "vit_emoji"
#: Display names of the transferability scores (``get_score_names``).
SCORE_NAMES = SCORE_LABELS
#: The scores of Li et al.'s claim, set in bold in the tables.
NC_SCORES = ("nc1", "cdnv")


# Caveats that hold whatever the numbers are (the verdicts themselves are
# computed by the scripts from their measurements); filled in from the results.
def _caveats(res):
    cfg, data = res["config"], res["data"]
    if res["experiment"] == "galanti":
        spc = data["samples_per_class"]
        n_test_vendors = len(data["held_out_vendors"])
        return {
            "collapse_generalizes": (
                f"Here the source classes have only {spc['min'] - n_test_vendors} to "
                f"{spc['max'] - n_test_vendors} training drawings each (Omniglot has 20), the "
                f"network is small and was trained for {cfg['epochs']} epochs on a CPU, so the "
                "collapse is far from complete: what is tested is the direction of the curves, "
                "not their end point."
            ),
            "fewshot_follows_cdnv": (
                f"The 5-shot episodes have {cfg['shots']['5']['n_query']} query per class (the "
                f"emoji have at most {spc['max']} drawings), so the accuracy of one episode is "
                "coarse; the 95% intervals account for it."
            ),
            "source_training_helps": (
                "The ImageNet backbones were trained on 1.28 million photographs; the own "
                f"backbone on {data['source']['n_train']:,} emoji drawings at {cfg['size']} px "
                f"for {cfg['epochs']} short CPU epochs. Raw pixels are a strong baseline on "
                "emoji because colour and silhouette alone separate many of them."
            ),
        }
    n = {task: len(r["table"]) for task, r in res["ranking"].items()}
    n_img = len(cfg["imagenet"])
    return {
        "collapse_predicts_transfer": (
            f"With only {max(n.values())} backbones ({n_img} ImageNet models and "
            f"{len(cfg['own_checkpoints'])} checkpoints of one own network) a rank correlation "
            "is weak evidence, and the two families differ in data, architecture and input "
            "size, so the pooled correlation partly measures the gap between the families; "
            "the correlation among the ImageNet models alone has too few points to be "
            "significant."
        ),
        "scl_ft_efficient": (
            f"{len(cfg['ft_seeds'])} training seeds per setting on one data split, a few "
            "epochs, no augmentation and no hyper-parameter search (one learning rate for all "
            "methods): differences within about two standard deviations of the seeds are not "
            "evidence either way, and the 10% sets are single draws."
        ),
        "scl_ft_collapse": (
            "SCL-FT's projection starts at zero, so SCL-FT starts as Layer FT and the two "
            "differ little in short runs."
        ),
    }


# ----------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------
def pm(mean, spread):
    return f"{pct(mean)} ± {pct(spread)}"


def secs(x):
    """Whole seconds."""
    return fmt.secs(x, digits=0)


def table(header, rows, widths=None):
    """An RST list-table."""
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append("   :widths: " + " ".join(str(w) for w in widths))
    lines.append("")
    for row in [header] + rows:
        for j, cell in enumerate(row):
            lines.append(("   * - " if j == 0 else "     - ") + (str(cell) if str(cell) else " "))
    return "\n".join(lines) + "\n"


def heading(text, char):
    return f"{text}\n{char * len(text)}\n"


def figure(name, alt, caption):
    return f".. figure:: results/{name}\n   :alt: {alt}\n   :width: 100%\n\n   {caption}\n"


def code(command):
    return f".. code-block:: bash\n\n   {command}\n"


def claim_block(c):
    status = {
        "held": "**held**",
        "partly held": "**partly held**",
        "did not hold": "**did not hold**",
        "not run": "**not run**",
    }[c["status"]]
    text = [f"*{c['paper']}: {c['claim']}*", "", f"Here: {status}. {c['verdict']}"]
    return "\n".join(text) + "\n"


# ----------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------
def render_galanti(g):
    cfg, data, col, fs = g["config"], g["data"], g["collapse"], g["fewshot"]
    out = [heading("Galanti et al.: few-shot transfer on multi-vendor emoji", "=")]
    held = ", ".join(data["held_out_vendors"])
    shots = {k: v["n_query"] for k, v in cfg["shots"].items()}
    out.append(f"""\
**What was run.** The emoji drawn by at least {data["min_vendors"]} of the
{len(data["vendors"])} vendors ({", ".join(data["vendors"])}) form an
Omniglot-like set: one emoji is one class, each vendor's drawing one sample
({count(data["n_classes"])} classes, {count(data["n_images"])} images,
{data["samples_per_class"]["min"]} to {data["samples_per_class"]["max"]} per class; {data["duplicates_dropped"]} emoji that some vendor
draws with exactly the image of another emoji, such as
{", ".join('"' + n.title() + '"' for n in data["duplicates_dropped_examples"][:2])}, were
dropped, keeping one emoji of each such group). :func:`~sknc.model_selection.source_novel_split`
made {count(data["novel"]["n_classes"])} of them novel classes ({count(data["novel"]["n_images"])}
images; stratified by Unicode category) and held the vendors {held} out of source
training: the {count(data["source"]["n_classes"])} source classes train on
{count(data["source"]["n_train"])} drawings and their {count(data["source"]["n_test"])} drawings
by {held} are the unseen "source test" samples. A timm ``{cfg["model"]}`` was trained
from random weights on the source classes with :func:`~sknc.finetune.pretrain_backbone`
({cfg["epochs"]} epochs, {cfg["size"]} px, batch {cfg["batch_size"]}, {cfg["optimizer"]},
lr {cfg["lr"]:g}, weight decay {cfg["weight_decay"]:g}, augmentation: {cfg["augment_desc"]}),
saving a checkpoint after every epoch (epoch 0 is the random initialisation). For every
checkpoint, the frozen penultimate features of all images gave CDNV and NC1
(:func:`~sknc.metrics.collapse_report`) on each set, the nearest-class-centre accuracy
on the held-out vendors' drawings (class centres from the training drawings), and
{cfg["n_way"]}-way 1-shot ({shots["1"]} queries per class, all novel classes) and
5-shot ({shots["5"]} query per class; the {fs["5"]["n_classes"]} novel classes drawn by at least
{5 + shots["5"]} vendors) NCC episodes on the novel classes, {count(cfg["episodes"])} episodes each
(:func:`~sknc.model_selection.evaluate_episodes`; mean ± 1.96 std / √n). Baselines on the
same episodes: NCC on raw pixels ({cfg["size"]} px) and on the frozen features of the
real ImageNet backbones ({", ".join(cfg["imagenet"])}; {cfg["imagenet_size"]} px inputs).
""")
    reused = (
        "; it reused the checkpoints of an earlier invocation of the same command, "
        f"whose pre-training took {g['pretrain']['total_seconds'] / 60:.0f} min"
        if g["pretrain"].get("reused")
        else ""
    )
    out.append(
        "Command (wall time "
        f"{g['wall_seconds'] / 60:.0f} min on the CPU, "
        f"{g['environment']['torch_threads']} torch thread{reused}):\n"
    )
    out.append(code(g["command"]))
    out.append(heading("Collapse and few-shot accuracy over training", "-"))
    nc = col["n_classes"]
    out.append(
        f"CDNV and NC1 are computed over the classes with at least two samples in a set "
        f"(source train: {nc['source_train']}, held-out vendors: {nc['source_test']}, "
        f"novel: {nc['novel']} classes). Accuracies in %.\n"
    )
    rows = []
    loss = [None] + list(g["pretrain"]["train_loss"])
    for i, e in enumerate(col["epoch"]):
        rows.append(
            [
                e,
                num(loss[i]),
                num(col["source_train"]["cdnv"][i]),
                num(col["source_test"]["cdnv"][i]),
                num(col["novel"]["cdnv"][i]),
                num(col["source_train"]["nc1"][i]),
                num(col["novel"]["nc1"][i]),
                pct(g["ncc_held_out_vendors_accuracy"][i]),
                pm(fs["1"]["mean"][i], fs["1"]["ci95"][i]),
                pm(fs["5"]["mean"][i], fs["5"]["ci95"][i]),
            ]
        )
    out.append(
        table(
            [
                "epoch",
                "train loss",
                "CDNV train",
                "CDNV held-out vendors",
                "CDNV novel",
                "NC1 train",
                "NC1 novel",
                "NCC acc. held-out vendors",
                "5-way 1-shot",
                "5-way 5-shot",
            ],
            rows,
        )
    )
    figs = g["figures"]
    out.append(
        figure(
            f"galanti_{figs['collapse_curves']}",
            "CDNV and NC1 per epoch",
            "CDNV (left) and NC1 (right) of the features of each checkpoint on the "
            "source training drawings, the held-out vendors' drawings of the source "
            "emoji and the novel emoji.",
        )
    )
    out.append(
        figure(
            f"galanti_{figs['fewshot_per_epoch']}",
            "few-shot accuracy per epoch",
            "Few-shot NCC accuracy on the novel emoji per epoch (bands: 95% "
            "confidence intervals); right of the vertical line, the baselines (open "
            "markers, with 95% intervals).",
        )
    )
    out.append(heading("Feature extractors compared on the novel classes", "-"))
    rows = []
    for r in g["feature_sets"]:
        rows.append(
            [
                r["name"],
                r["input_size"],
                count(r["n_features"]),
                num(r["cdnv"]),
                num(r["nc1"]),
                pm(r["fewshot"]["1"]["mean"], r["fewshot"]["1"]["ci95"]),
                pm(r["fewshot"]["5"]["mean"], r["fewshot"]["5"]["ci95"]),
            ]
        )
    out.append(
        table(
            [
                "features",
                "input px",
                "dims",
                "novel CDNV",
                "novel NC1",
                "5-way 1-shot (%)",
                "5-way 5-shot (%)",
            ],
            rows,
        )
    )
    out.append(
        figure(
            f"galanti_{figs['fewshot_vs_cdnv']}",
            "few-shot accuracy against CDNV",
            "Few-shot accuracy against the novel-class CDNV: the own backbone per "
            "epoch (lines) and the baselines (open markers).",
        )
    )
    ce, cs = g["correlations"]["epochs"], g["correlations"]["feature_sets"]
    out.append(
        "Rank correlation between novel-class CDNV and few-shot accuracy: over the "
        f"{ce['5']['n']} checkpoints, Spearman ρ = {num(ce['1']['spearman'], 2)} "
        f"(p {p_equals(ce['1']['spearman_pvalue'])}) for 1-shot and "
        f"{num(ce['5']['spearman'], 2)} (p {p_equals(ce['5']['spearman_pvalue'])}) for "
        f"5-shot; over the {cs['5']['n']} feature extractors of the table, "
        f"ρ = {num(cs['1']['spearman'], 2)} (p {p_equals(cs['1']['spearman_pvalue'])}) and "
        f"{num(cs['5']['spearman'], 2)} (p {p_equals(cs['5']['spearman_pvalue'])}).\n"
    )
    out.append(heading("Did the claims hold?", "-"))
    for key, c in g["claims"].items():
        out.append(heading(c["title"], "~"))
        out.append(claim_block(c))
        out.append(_caveats(g)[key] + "\n")
    return "\n".join(out)


def render_li(li):
    cfg, data = li["config"], li["data"]
    fm, em = data["fashion_mnist"], data["emoji_category"]
    out = [heading("Li et al.: ranking and fine-tuning real pretrained backbones", "=")]
    own = ", ".join(f"``{n}``" for n in cfg["own_checkpoints"])
    bs = cfg["ft_batch_size"]
    steps = "; ".join(
        f"{TASK_NAMES[task]}: {-(-d['n_train'] // bs) * cfg['ft_epochs_full']} and "
        f"{-(-d['n_train_scarce'] // bs) * cfg['ft_epochs_scarce']}"
        for task, d in data.items()
    )
    out.append(f"""\
**What was run.** Backbones: the real ImageNet-1k {", ".join(cfg["imagenet"])}
(:func:`~sknc.datasets.load_pretrained_backbone`; {cfg["imagenet_size"]} px inputs) and
{len(cfg["own_checkpoints"])} checkpoints of the project's own ``{cfg["own_backbone"]}``
trained on the source emoji
classes by the Galanti run above ({own}; {cfg["own_size"]} px inputs). Downstream tasks:

* **Fashion-MNIST**: {fm["source"]}: {count(fm["n_train"])} training and
  {count(fm["n_test"])} test images, 10 classes; the "full" training set below is this
  subsample, the "10%" set a stratified tenth of it ({count(fm["n_train_scarce"])} images).
* **Emoji categories**: {em["source"]}. {em["n_classes"]} categories
  ({", ".join(em["categories"])}; dropped for having fewer than {cfg["min_category_emoji"]}
  novel emoji: {", ".join(em["dropped_categories"]) or "none"}), {count(em["n_emoji"])} emoji,
  {count(em["n_train"])} training and {count(em["n_test"])} test images; "10%":
  {count(em["n_train_scarce"])} images.

Ranking: :func:`~sknc.model_selection.rank_backbones` measured NC1 and CDNV of each
backbone's frozen features on the downstream training set and the test accuracy of a
linear probe ({cfg["probe"]}) trained on those features, then Spearman's ρ and Kendall's
τ between NC1 and accuracy (negative = more collapse, better transfer). Fine-tuning:
:class:`~sknc.finetune.FineTuningClassifier` on the ImageNet ``{cfg["ft_model"]}``
({cfg["imagenet_size"]} px; {cfg["ft_optimizer"]}; lr {cfg["ft_lr"]:g}, batch
{cfg["ft_batch_size"]}; {cfg["ft_epochs_full"]} epochs on the full sets and
{cfg["ft_epochs_scarce"]} on the 10% sets, for a similar number of optimisation steps
({steps}); Layer FT and SCL-FT
tune the default block, frozen prefixes cached; training seeds
{", ".join(map(str, cfg["ft_seeds"]))} on the same data). Seconds are ``fit`` wall time on the shared CPU (one torch thread),
including the pass that caches the frozen prefix.
""")
    cache = li.get("finetune_cache") or {}
    if cache.get("reused_runs"):
        out.append(
            "Command (the script caches backbone features and stores every fine-tuning run; "
            "the invocation that wrote these results reused the features and "
            f"{cache['reused_runs']} of the {cache['reused_runs'] + cache['computed_runs']} "
            "fine-tuning runs from earlier invocations of the same command, so its wall time "
            f"({li['wall_seconds'] / 60:.0f} min) is not the cost of the study; the fine-tuning "
            f"runs took {cache['fit_seconds_all_runs'] / 60:.0f} min of ``fit`` time in all):\n"
        )
    else:
        out.append(f"Command (wall time {li['wall_seconds'] / 60:.0f} min):\n")
    out.append(code(li["command"]))
    out.append(heading("NC1 on downstream training data vs linear-probe accuracy", "-"))
    for task, r in li["ranking"].items():
        rows = [
            [
                row["rank"],
                row["backbone"],
                row["weights"] if row["kind"] == "imagenet" else "own (source emoji)",
                row["input_size"],
                count(row["n_features"]),
                num(row["nc1"]),
                num(row["cdnv"]),
                pct(row["accuracy"]),
            ]
            for row in r["table"]
        ]
        out.append(f"**{TASK_NAMES[task]}** (sorted by NC1, most collapsed first):\n")
        out.append(
            table(
                [
                    "rank",
                    "backbone",
                    "weights",
                    "input px",
                    "dims",
                    "NC1",
                    "CDNV",
                    "linear probe acc. (%)",
                ],
                rows,
            )
        )
        c, i = r["correlations"]["nc1"], r["imagenet_only"]
        cd = r["correlations"]["cdnv"]
        out.append(
            f"NC1 vs accuracy over {len(r['table'])} backbones: Spearman ρ = "
            f"{num(c['spearman'], 2)} (p {p_equals(c['spearman_pvalue'])}), Kendall τ = "
            f"{num(c['kendall'], 2)} (p {p_equals(c['kendall_pvalue'])}); CDNV vs accuracy: "
            f"ρ = {num(cd['spearman'], 2)}, τ = {num(cd['kendall'], 2)}; the "
            f"{i['n']} ImageNet backbones alone: ρ = {num(i['spearman'], 2)}, "
            f"τ = {num(i['kendall'], 2)} (p {p_equals(i['kendall_pvalue'])}).\n"
        )
    out.append(
        figure(
            f"li_{li['figures']['nc_vs_accuracy']}",
            "NC1 against linear-probe accuracy",
            "NC1 of the frozen features on the downstream training set against "
            "linear-probe test accuracy, one point per backbone.",
        )
    )
    if li.get("finetune"):
        out.append(heading("Linear probe, Layer FT, SCL-FT and full fine-tuning", "-"))
        for task, rows_ in li["finetune"].items():
            rows = []
            for r in rows_:
                rows.append(
                    [
                        "full" if r["regime"] == "full" else "10%",
                        count(r["n_train"]),
                        METHOD_NAMES[r["method"]],
                        f"``{r['tuned_block']}``" if r["tuned_block"] else "",
                        pm(r["accuracy"], r["accuracy_std"])
                        if finite(r["accuracy_std"])
                        else pct(r["accuracy"]),
                        pct(r["train_accuracy"]) if r["train_accuracy"] is not None else "",
                        count(r["n_trainable_params"]),
                        pct(r["trainable_vs_full"]),
                        secs(r["fit_seconds"]),
                        num(r["train_nc1"]),
                    ]
                )
            n_seeds = rows_[0]["n_seeds"]
            out.append(
                f"**{TASK_NAMES[task]}** (accuracies in %; test accuracy: mean ± standard "
                f"deviation over {n_seeds} training seeds; train accuracy (10% sets "
                "only), fit seconds and train NC1: means over the seeds):\n"
            )
            out.append(
                table(
                    [
                        "train set",
                        "images",
                        "method",
                        "tuned block",
                        "test acc.",
                        "train acc.",
                        "trainable params",
                        "% of full FT",
                        "fit s",
                        "train NC1",
                    ],
                    rows,
                )
            )
            out.append(
                figure(
                    f"li_{li['figures'][f'finetune_{task}']}",
                    f"fine-tuning methods on {TASK_NAMES[task]}",
                    f"{TASK_NAMES[task]}: test accuracy, trainable parameters and "
                    "training time of the four methods, full (top) and 10% (bottom) "
                    "training sets.",
                )
            )
    out.append(heading("Did the claims hold?", "-"))
    for key, c in li["claims"].items():
        out.append(heading(c["title"], "~"))
        out.append(claim_block(c))
        out.append(_caveats(li)[key] + "\n")
    return "\n".join(out)


# ----------------------------------------------------------------------------
# transferability scores (issue 15) and PEFT (issue 16)
# ----------------------------------------------------------------------------
def tau(x):
    """A rank correlation with two decimals."""
    return "n/a" if not finite(x) else f"{float(x):.2f}"


def _score(name):
    """Display name of a score, bold for NC1 and CDNV (Li et al.'s claim)."""
    label = SCORE_NAMES.get(name, name)
    return f"**{label}**" if name in NC_SCORES else label


def _evaluations(t):
    """``[(key, title, evaluation)]`` for the ground truths the run measured."""
    out = [("linear_probe", "linear-probe accuracy", t["evaluation_linear_probe"])]
    if t.get("evaluation_finetuned"):
        out.append(("finetuned", "fine-tuned accuracy", t["evaluation_finetuned"]))
    return out


def _tau_order(mean):
    """Score names by mean weighted tau, best first (scores without one last)."""
    taus = {s: st["weighted_tau"] for s, st in mean.items()}
    have = sorted((s for s in taus if finite(taus[s])), key=lambda s: -taus[s])
    return have + [s for s in taus if not finite(taus[s])]


def nc1_places(t):
    """Where NC1 stands among the scores, per ground truth: on average and per data set.

    ``{truth_key: {"mean": (rank, n, [scores above]), task: (rank, n, [...])}}``,
    ranks by weighted tau among the scores with a finite one (1 = best), ties
    counted in NC1's favour.
    """
    out = {}
    for key, _, ev in _evaluations(t):
        places = {}
        stats = {"mean": ev["mean"]}
        for task in t["tasks"]:
            stats[task] = {s: per[task] for s, per in ev["per_dataset"].items()}
        for where, st in stats.items():
            taus = {s: v["weighted_tau"] for s, v in st.items() if finite(v["weighted_tau"])}
            if "nc1" not in taus:
                places[where] = (None, len(taus), [])
                continue
            above = sorted((s for s in taus if taus[s] > taus["nc1"]), key=lambda s: -taus[s])
            places[where] = (len(above) + 1, len(taus), above)
        out[key] = places
    return out


def _place(p):
    rank, n, _ = p
    return "n/a" if rank is None else f"{rank} of {n}"


def _n_scored(t, score):
    """How many models a score has a value for (the fewest over the data sets)."""
    return min(sum(finite(v) for v in per.values()) for per in t["scores"][score].values())


def _partial_scores(t):
    """Scores that rank only part of the pool (e.g. LEEP and NCE: models with a head)."""
    return [s for s in t["scores"] if _n_scored(t, s) < len(t["models"])]


def _ft_budget(cfg):
    """The fine-tuning budget of the transferability run, in words."""
    epochs = f"{cfg['ft_epochs']} epoch{'s' if cfg['ft_epochs'] != 1 else ''}"
    return (
        f"every layer and a new head, AdamW, {epochs} at lr {cfg['ft_lr']:g}, batch 32, "
        f"on at most {count(cfg['ft_train'])} training images per set"
    )


def full_preset_estimate(t):
    """Hours the ``full`` preset would take, scaled from this run's measured phase times.

    Feature extraction and linear probes scale with the images (train + test)
    times the pixels, fine-tuning with the training images times the pixels
    times the epochs, the scores with the square of the training images (the
    bound of k-NN leave-one-out and PARC; most scores are linear), pre-training
    with its epochs. None for runs without phase times, or of the full preset.
    """
    import reproduce_transferability

    ph, cfg = t.get("phase_seconds"), t["config"]
    full = reproduce_transferability.PRESETS["full"]
    if not ph or cfg["preset"] == "full":
        return None
    px = (full["size"] / cfg["size"]) ** 2
    images = (full["n_train"] + full["n_test"]) / (cfg["n_train"] + cfg["n_test"])
    scores = sum(t["score_seconds"].values())
    rank = sum(v for k, v in ph.items() if k.startswith("rank "))
    ft = sum(v for k, v in ph.items() if k.startswith("finetune "))
    seconds = (
        ph["load_data"]
        + ph["pretrain_own_checkpoints"] * full["pretrain_epochs"] / cfg["pretrain_epochs"]
        + (rank - scores) * px * images
        + scores * (full["n_train"] / cfg["n_train"]) ** 2
        + ft * px * full["ft_train"] / cfg["ft_train"] * full["ft_epochs"] / cfg["ft_epochs"]
    )
    return seconds / 3600


def ft_vs_lp_counts(t):
    """The run's ``ft_vs_lp`` (how often fine-tuning beats the probe), or it recomputed.

    Runs before the script stored it are counted here from the two accuracy tables.
    """
    if t.get("ft_vs_lp"):
        return t["ft_vs_lp"]
    import reproduce_transferability

    return reproduce_transferability.ft_vs_lp(t["linear_probe_accuracy"], t["finetuned_accuracy"])


def transferability_summary(t):
    """The row of the page's summary table for the transferability benchmark."""
    places = nc1_places(t)
    here = "; ".join(
        f"NC1 {_place(places[key]['mean'])} ({title.split()[0]})"
        for key, title, _ in _evaluations(t)
    )
    c = t.get("claim")
    if c:
        return [c["paper"], c["title"] + " (mean weighted Kendall tau)", f"{c['status']}: {here}"]
    return [
        "Li et al., TMLR 2024, against the transferability-estimation field",
        "NC1 of the frozen downstream features ranks backbones as well as the field's "
        "transferability scores (mean weighted Kendall tau)",
        here,
    ]


def render_transferability(t):
    cfg, tasks = t["config"], t["tasks"]
    out = [heading("Which backbone will transfer? NC1 among the field's scores", "=")]
    own = [m for m in t["models"] if m.startswith("own ")]
    rand = [m for m in t["models"] if m.startswith("random ")]
    imagenet = [m for m in t["models"] if m not in own and m not in rand]
    scores = list(t["scores"])
    rows = [
        [
            TASK_NAMES.get(task, task),
            count(d["n_train"]),
            count(d["n_test"]),
            d["n_classes"],
        ]
        for task, d in tasks.items()
    ]
    out.append(f"""\
**What was run** (``benchmarks/reproduce_transferability.py``, preset
``{cfg["preset"]}``). The protocol of the transferability-estimation field (SFDA,
ECCV 2022; NCTI and ETran, ICCV 2023) on what is reachable here. Pool of
{len(t["models"])} candidates: the ImageNet-1k {", ".join(imagenet)}; random
initialisations ({", ".join(m.split(" ", 1)[1] for m in rand)}); and {len(own)} checkpoints of a ``resnet10t``
trained from scratch by :func:`~sknc.finetune.pretrain_backbone` on the *source* classes
of the glyphs ({cfg["pretrain_epochs"]} epochs at {cfg["own_size"]} px; epochs
{", ".join(str(e) for e in cfg["own_epochs"])}). Every candidate sees {cfg["size"]} px
inputs. Scores ({len(scores)}): {", ".join(SCORE_NAMES.get(s, s) for s in scores)}, all
from one feature extraction per model and data set on the downstream training set
(:func:`~sknc.model_selection.rank_backbones`; LEEP and NCE use the ImageNet models' own
heads and are undefined for the others). Ground truth: the test accuracy of a linear
probe on the frozen features, and of full fine-tuning with the same fixed budget for
every model ({_ft_budget(cfg)}). Each score
is judged by :func:`~sknc.model_selection.evaluate_rankings`: weighted Kendall τ
(``scipy.stats.weightedtau``, the field's convention; 1 = the score orders the models
exactly as their accuracy) and top-1 regret (accuracy lost, in points, by taking the
model the score ranks first instead of the best one), per data set and on average.
Seed {cfg["seed"]}; one run.
""")
    out.append(table(["data set", "train images", "test images", "classes"], rows))
    hours = full_preset_estimate(t)
    if hours is not None:
        full, load = t["config"], t.get("load_average")
        out.append(
            f"**The full preset did not run here.** Scaled from this run's measured phase "
            f"times (``phase_seconds``: pre-training by its epochs, feature extraction and "
            f"probes by images x pixels, the scores by the square of the training images, "
            f"fine-tuning by training images x pixels x epochs), it would take about "
            f"{hours:.0f} hours on the same shared CPU at the same load"
            + (f" (median {load['median']:.1f})" if load else "")
            + f", against {t['seconds'] / 60:.0f} minutes for the ``{full['preset']}`` preset.\n"
        )
    out.append(
        f"Command (wall time {t['seconds'] / 60:.0f} min on the shared CPU, "
        f"{t['environment']['torch_threads']} torch thread):\n"
    )
    out.append(code(t["command_line"]))

    evs = _evaluations(t)
    order = _tau_order(evs[0][2]["mean"])
    out.append(heading("Every score on average over the data sets", "-"))
    header = ["score"]
    for _, title, _ in evs:
        short = title.split()[0]
        header += [f"weighted τ ({short})", f"top-1 regret ({short}, points)"]
    header += ["models scored", "data sets with a τ", "wall time (s, all sets)"]
    rows = []
    for s in order:
        row = [_score(s)]
        for _, _, ev in evs:
            st = ev["mean"][s]
            row += [tau(st["weighted_tau"]), pct(st["top1_regret"])]
        row += [
            _n_scored(t, s),
            evs[0][2]["mean"][s]["n_datasets"],
            fmt.secs(t["score_seconds"].get(s), digits=1),
        ]
        rows.append(row)
    out.append(
        "Sorted by mean weighted τ against linear-probe accuracy (best first); NC1 and CDNV "
        "in bold. Wall time: seconds spent computing the score for all "
        f"{len(t['models'])} models on all {len(tasks)} sets (feature extraction "
        "excluded; it is shared by all scores).\n"
    )
    out.append(table(header, rows))
    out.append(
        figure(
            "transferability.png",
            "mean weighted Kendall tau of every score",
            "Mean weighted Kendall τ of every score against linear-probe (left) and "
            "fine-tuned (right) accuracy over the data sets (red: NC1 and CDNV).",
        )
    )
    for _, title, ev in evs:
        out.append(heading(f"Per data set, against {title}", "-"))
        header = ["score"] + [TASK_NAMES.get(task, task) for task in tasks]
        rows = []
        for s in _tau_order(ev["mean"]):
            rows.append(
                [_score(s)]
                + [
                    f"{tau(ev['per_dataset'][s][task]['weighted_tau'])} / "
                    f"{pct(ev['per_dataset'][s][task]['top1_regret'])}"
                    for task in tasks
                ]
            )
        out.append("Each cell: weighted τ / top-1 regret (points).\n")
        out.append(table(header, rows))
    out.append(heading("Ground truth", "-"))
    truths = [("linear probe", t["linear_probe_accuracy"])]
    if t.get("finetuned_accuracy"):
        truths.append(("fine-tuned", t["finetuned_accuracy"]))
    header = ["model"] + [
        f"{TASK_NAMES.get(task, task)} ({name})" for task in tasks for name, _ in truths
    ]
    rows = [[m] + [pct(acc[task][m]) for task in tasks for _, acc in truths] for m in t["models"]]
    out.append("Test accuracy (%) of every candidate.\n")
    out.append(table(header, rows))

    out.append(heading("Where NC1 stands", "-"))
    places = nc1_places(t)
    for key, title, _ in evs:
        p = places[key]
        per = "; ".join(
            f"{TASK_NAMES.get(task, task)} {_place(p[task])}"
            + (
                f" (behind {', '.join(SCORE_NAMES.get(s, s) for s in p[task][2])})"
                if p[task][2]
                else ""
            )
            for task in tasks
        )
        out.append(
            f"* Against {title}: NC1's mean weighted τ ranks {_place(p['mean'])} "
            f"among the scores with a τ; per data set: {per}.\n"
        )
    partial = _partial_scores(t)
    if partial:
        out.append(
            f"{', '.join(SCORE_NAMES.get(s, s) for s in partial)} rank only the models they "
            f"have a value for ({', '.join(str(_n_scored(t, s)) for s in partial)} of "
            f"{len(t['models'])}: the ImageNet models, whose pretrained head they need), so "
            "their τ and regret are over that smaller pool and not comparable with the "
            "others'; they still count in the ranks above.\n"
        )
    out.append(f"The script's verdict: {t['verdict']}\n")
    if t.get("claim"):
        c = t["claim"]
        out.append(
            f"**Li et al.'s claim relative to the other scores: {c['status']}.** {c['verdict']}\n"
        )
    budget = ""
    if t.get("finetuned_accuracy"):
        c = ft_vs_lp_counts(t)
        per = "; ".join(
            f"{TASK_NAMES.get(task, task)} {d['ft_better']} of {d['ft_better'] + d['tie'] + d['lp_better']}"
            for task, d in c["per_dataset"].items()
        )
        budget = (
            f" **How often fine-tuning beats the linear probe:** in {c['ft_better']} of the "
            f"{c['pairs']} model and data set pairs (ties {c['tie']}; mean difference "
            f"{100 * c['mean_gain']:+.1f} points; per data set: {per}). The budget is fixed "
            f"and the same for every model ({_ft_budget(cfg)})"
        )
        if t.get("ft_vs_lp"):  # runs from the chosen budget on
            budget += (
                ", chosen by measurement before the run (the numbers are in the comment "
                "above ``FT_EPOCHS`` in ``benchmarks/reproduce_transferability.py``): the "
                "earlier budget (one epoch at lr 5e-4 on 200 images) left every model below "
                "its probe; LP-FT (the head started from the probe) fell below the probe or "
                "diverged on these small images; a learning rate chosen per model on a "
                "validation split was not affordable on the shared CPU"
            )
        budget += (
            ". Where fine-tuning stays below the probe, the fine-tuned ranking measures how "
            "far a model gets in a few epochs, not how far it could get."
        )
    out.append(
        f"These are {len(t['models'])} models on {len(tasks)} small data sets and one seed: "
        f"a weighted τ over {len(t['models'])} models moves by a few tenths when two models "
        "swap, and the pool mixes families (ImageNet models, random initialisations, own "
        "checkpoints) whose gaps any reasonable score sees." + budget + " At this scale the "
        "table says which scores rank *these* pools well, not the published benchmark's "
        "11 x 11 figures.\n"
    )
    return "\n".join(out)


def _regime(r):
    return "full" if r["regime"] == "full" else f"{r['n_train']} (10%)"


def _peft_near_chance(p):
    """``[(backbone, task, regime, method)]`` whose mean accuracy is below 1.5 / K."""
    out = []
    for r in p["summary"]:
        k = p["data"][r["task"]]["n_classes"]
        if r["accuracy"] < 1.5 / k and r["method"] != "scl-ft-best":
            out.append(r)
    return out


def render_peft(p):
    cfg, data = p["config"], p["data"]
    out = [heading("How to fine-tune cheaply: SCL-FT against PEFT baselines", "=")]
    imagenet = [b for b in cfg["backbones"] if b != ISSUE_16_VIT]
    backbones = (
        f"the real ImageNet-1k {', '.join(BACKBONE_NAMES.get(b, b) for b in imagenet)}"
        if imagenet
        else ""
    )
    vit = p.get("vit_pretraining")
    if ISSUE_16_VIT in cfg["backbones"]:
        kw = vit["model_kwargs"]
        st = vit["settings"]
        backbones = (
            f"a ViT (timm ``{vit['model']}`` layout, {kw['depth']} blocks of width "
            f"{kw['embed_dim']}, {kw['num_heads']} heads, {kw['patch_size']} px patches) trained "
            "from random weights by :func:`~sknc.finetune.pretrain_backbone` on "
            f"{count(vit['n_images'])} source emoji images of {count(vit['n_classes'])} emoji "
            f"(every vendor's drawing, labelled by emoji; the {vit['excluded_emoji']} emoji of "
            f"the downstream emoji task left out), {st['max_epochs']} epochs, lr {st['lr']:g}, "
            f"batch {st['batch_size']}, weight decay {st['weight_decay']:g}, "
            f"{st['optimizer']} ({vit['seconds'] / 60:.0f} min; final training accuracy on the "
            f"source images {pct(vit['source_train_accuracy'])}%)"
            + (f"; and {backbones}" if backbones else "")
        )
    methods = ", ".join(
        f"{METHOD_NAMES.get(k, k)} (``{', '.join(f'{a}={b!r}' for a, b in v.items())}``)"
        for k, v in cfg["methods"].items()
    )
    rows = [
        [
            TASK_NAMES.get(task, task),
            count(d["n_train"]),
            count(d["n_train_scarce"]),
            count(d["n_test"]),
            d["n_classes"],
        ]
        for task, d in data.items()
    ]
    sweep = (
        "every candidate block"
        if cfg["sweep_blocks"] is None
        else f"{cfg['sweep_blocks']} evenly spaced candidate blocks and the auto block"
    )
    out.append(f"""\
**What was run** (``benchmarks/reproduce_peft.py``, preset ``{cfg["preset"]}``).
Backbones: {backbones}, at {cfg["imagenet_size"]} px. Methods of
:class:`~sknc.finetune.FineTuningClassifier`: {methods}; and SCL-FT on the best block of a
sweep over {sweep} (an oracle: chosen on the test set). The same tuning budget for every
method: its learning rate is chosen from the grid
{", ".join(f"{lr:g}" for lr in cfg["lr_grid"])} on a validation split (seed {cfg["seed"]};
a stratified {pct(cfg["validation_fraction"], 0)}% of the training set; for the 10% sets,
fitted on the 10% set and scored on as many training images from outside it), then it trains
on the whole training set with that rate for seeds {", ".join(map(str, cfg["seeds"]))};
{cfg["optimizer"]}; batch {cfg["batch_size"]}; {cfg["epochs_full"]} epochs on the full sets
and {cfg["epochs_scarce"]} on the 10% sets. Accuracy is test accuracy, mean ± standard
deviation over the seeds; seconds per epoch are measured on the shared CPU (one torch
thread) and include the cached-prefix pass where the frozen prefix is cached.
""")
    out.append(table(["data set", "train images", "10% set", "test images", "classes"], rows))
    cache = p.get("cache") or {}
    if p.get("invocations"):  # results merged from invocations on disjoint backbones
        parts = "; ".join(
            f"{', '.join(BACKBONE_NAMES.get(b, b) for b in inv['backbones'])}: "
            f"``{inv['command']}`` at git ``{inv['git']}``, {inv['wall_seconds'] / 60:.0f} min"
            + (
                f" ({count(inv['cache']['reused_runs'])} of its "
                f"{count(inv['cache']['reused_runs'] + inv['cache']['computed_runs'])} fits "
                "reused from earlier invocations)"
                if (inv.get("cache") or {}).get("reused_runs")
                else ""
            )
            + (f" ({inv['note']})" if inv.get("note") else "")
            for inv in p["invocations"]
        )
        out.append(
            "Command (these results merge invocations on different backbones, with the same "
            f"data, grid, seeds and epochs: {parts}; below, those commands one after the other):\n"
        )
    elif cache.get("reused_runs"):
        n_all = cache["reused_runs"] + cache["computed_runs"]
        out.append(
            "Command (the script stores every fit in ``OUT/runs.json`` and reuses the stored "
            f"ones; the invocation that wrote these results reused {count(cache['reused_runs'])} "
            f"of its {count(n_all)} fits from earlier invocations of the same configuration, "
            f"so its wall time, {p['wall_seconds'] / 60:.0f} min, is not the cost of the "
            "study; the seconds per epoch in the tables are measured per fit):\n"
        )
    else:
        out.append(f"Command (wall time {p['wall_seconds'] / 60:.0f} min):\n")
    out.append(code(p["command"]))
    out.append(
        figure(
            DRAWN_FIGURES["peft"],
            "test accuracy against trainable parameters per method",
            "Test accuracy (mean over the data sets of the mean over the seeds) against the "
            "share of full fine-tuning's trainable parameters, per backbone (columns) and "
            "training set (rows); drawn by the page script from the tables below.",
        )
    )
    for backbone in cfg["backbones"]:
        for task in data:
            rows = []
            for r in p["summary"]:
                if (r["backbone"], r["task"]) != (backbone, task):
                    continue
                rows.append(
                    [
                        _regime(r),
                        METHOD_NAMES.get(r["method"], r["method"]),
                        f"{r['lr']:g}",
                        pm(r["accuracy"], r["accuracy_std"])
                        if finite(r["accuracy_std"])
                        else pct(r["accuracy"]),
                        count(r["n_trainable_params"]),
                        pct(r["trainable_vs_full"]),
                        num(r["seconds_per_epoch"], 2),
                        num(r["train_nc1"]),
                        f"``{r['tuned_block']}``" if r["tuned_block"] else "",
                    ]
                )
            if not rows:  # a backbone run on fewer data sets (config's backbone_tasks)
                continue
            out.append(
                heading(f"{BACKBONE_NAMES.get(backbone, backbone)}, {TASK_NAMES[task]}", "-")
            )
            out.append(
                table(
                    [
                        "train set",
                        "method",
                        "lr",
                        "test acc. (%)",
                        "trainable params",
                        "% of full FT",
                        "s / epoch",
                        "train NC1",
                        "tuned block",
                    ],
                    rows,
                )
            )
    out.append(heading("The block chosen by collapse against the swept blocks", "-"))
    rows = []
    for r in p["summary"]:
        if r["method"] != "scl-ft-auto" or not r.get("sweep"):
            continue
        rows.append(
            [
                BACKBONE_NAMES.get(r["backbone"], r["backbone"]),
                TASK_NAMES[r["task"]],
                _regime(r),
                f"``{r['tuned_block']}`` {pm(r['accuracy'], r['accuracy_std'])}",
                "; ".join(
                    f"``{s['tuned_block']}`` {pm(s['accuracy'], s['accuracy_std'])}"
                    for s in r["sweep"]
                ),
            ]
        )
    out.append(
        "SCL-FT test accuracy (%) with the auto block (``tuned_block='auto'``) and with each "
        "swept block, at the learning rate chosen for the auto block.\n"
    )
    out.append(table(["backbone", "data set", "train set", "auto block", "swept blocks"], rows))
    out.append(heading("Did the claims hold?", "-"))
    for c in p["claims"].values():
        out.append(heading(c["title"], "~"))
        out.append(claim_block(c))
    missing = [BACKBONE_NAMES[b] for b in ISSUE_16_BACKBONES if b not in cfg["backbones"]]
    if ISSUE_16_VIT not in cfg["backbones"]:
        missing.append(
            "a ViT trained on source classes by :func:`~sknc.finetune.pretrain_backbone`"
        )
    if missing:
        out.append(
            f"**Not in this run:** {', '.join(missing)}, which the issue's protocol asks "
            f"for: {'their' if len(missing) > 1 else 'its'} runs did not fit the CPU time "
            "available for this run, so every "
            "verdict below is about "
            f"{', '.join(BACKBONE_NAMES.get(b, b) for b in cfg['backbones'])} alone.\n"
        )
    for backbone, tasks in (cfg.get("backbone_tasks") or {}).items():
        if set(tasks) != set(data):
            out.append(
                f"**{BACKBONE_NAMES.get(backbone, backbone)} on fewer data sets:** only "
                f"{', '.join(TASK_NAMES[t] for t in tasks)} (the other sets' runs did not fit "
                "the CPU time available); its verdicts and the figure's means are over "
                "those sets only.\n"
            )
    low = _peft_near_chance(p)
    caveat = (
        f"Scale: {cfg['imagenet_size']} px inputs, at most {count(cfg['max_train'])} training "
        f"images per set, {cfg['epochs_full']} and {cfg['epochs_scarce']} epochs, "
        f"{len(cfg['seeds'])} seeds on one data split: a difference within about two "
        "standard deviations of the seeds is not evidence either way."
    )
    if low:
        caveat += (
            f" {len(low)} of the {sum(r['method'] != 'scl-ft-best' for r in p['summary'])} "
            "method rows stay below 1.5 times chance (1 / classes) even at their best "
            "learning rate: "
            + "; ".join(
                f"{METHOD_NAMES.get(r['method'], r['method'])} on "
                f"{BACKBONE_NAMES.get(r['backbone'], r['backbone'])}, {TASK_NAMES[r['task']]} "
                f"({'full set' if r['regime'] == 'full' else '10% set'})"
                for r in low
            )
            + ". At this budget those methods did not train, so the comparisons with them say "
            "more about the budget than about the methods."
        )
    out.append(caveat + "\n")
    return "\n".join(out)


def draw_peft(p, path):
    """The PEFT figure: accuracy against trainable share, per backbone and training set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    backbones = p["config"]["backbones"]
    regimes = ("full", "scarce")
    fig, axes = plt.subplots(
        len(regimes), len(backbones), figsize=(5.5 * len(backbones), 8), squeeze=False,
        layout="constrained", sharey="row",
    )  # fmt: skip
    methods = list(dict.fromkeys(r["method"] for r in p["summary"]))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for i, regime in enumerate(regimes):
        for j, backbone in enumerate(backbones):
            ax = axes[i][j]
            for m in methods:
                rows = [
                    r
                    for r in p["summary"]
                    if (r["backbone"], r["regime"], r["method"]) == (backbone, regime, m)
                ]
                if not rows:
                    continue
                x = 100 * float(np.mean([r["trainable_vs_full"] for r in rows]))
                y = 100 * float(np.mean([r["accuracy"] for r in rows]))
                ax.scatter([x], [y], color=colors[m], s=40, zorder=3)
                ax.annotate(METHOD_NAMES.get(m, m), (x, y), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
            ax.set_xscale("log")
            ax.margins(x=0.25)
            ax.grid(alpha=0.3)
            name = BACKBONE_NAMES.get(backbone, backbone)
            ax.set_title(f"{name}, {'full' if regime == 'full' else '10%'} training sets")
            ax.set_xlabel("trainable parameters (% of full fine-tuning)")
            ax.set_ylabel("test accuracy (%), mean over data sets")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def page_figures(results):
    """File names (in docs/results/) of every figure the page shows."""
    out = {
        asset_name(name, fig)
        for name, res in results.items()
        for fig in figures(name, res).values()
    }
    return out | {DRAWN_FIGURES[name] for name in results if name in DRAWN_FIGURES}


def render(results):
    """The whole page (str) from ``{"galanti": ..., "li": ..., "transferability": ..., "peft": ...}``."""
    g, li = results["galanti"], results["li"]
    t, pf = results["transferability"], results["peft"]
    claims = [(g, c) for c in g["claims"].values()] + [(li, c) for c in li["claims"].values()]
    rows = [[c["paper"], c["title"], c["status"]] for _, c in claims]
    rows.append(transferability_summary(t))
    rows += [[c["paper"], c["title"], c["status"]] for c in pf["claims"].values()]
    summary = table(["paper", "claim", "here"], rows, widths=[20, 60, 20])
    env = g["environment"]
    head = f"""\
.. _results:

.. This page is generated by ``{PAGE_COMMAND}`` from docs/results/*.json
   (copies of the reproductions' results.json); do not edit it by hand.

{heading("Results on real data", "#")}
The two papers behind sknc, reproduced with the toolkit on real data and real
pretrained weights that this project can fetch from package registries
(:doc:`user_guide/datasets`): artwork of seven emoji vendors, Fashion-MNIST and the
ImageNet weights of MobileNetV2 and EfficientNet-Lite0/1/2; then NC1 judged against the
field's transferability scores, and SCL-FT against the field's parameter-efficient
fine-tuning methods. Everything ran on a shared
2-core CPU without a GPU, so the models are small, the images small (stated per
experiment) and the training short: this is a faithful *protocol* at a small scale,
not the papers' scale. Every number, table and figure below was written by the scripts
whose command is shown; the page itself is rendered from their ``results.json`` by
``{PAGE_COMMAND}``, and a test checks that it matches them. The verdicts ("held",
"partly held", "did not hold") are computed by the scripts from their measurements with
the rules stated in their source.

{summary}
Environment: Python {env["python"]}, torch {env["torch"]}, timm {env["timm"]},
scikit-learn {env["scikit-learn"]}, {env["cpu_count"]} CPU cores shared with other jobs,
{env["torch_threads"]} torch thread, sknc revision ``{env["git"]}`` (Galanti and Li
sections; the transferability and PEFT runs at ``{t["environment"]["git"]}`` and
``{pf["git"]}``).

To reproduce everything (the data are fetched into the git-ignored ``benchmarks/data``):

.. code-block:: bash

   python benchmarks/fetch_data.py
   {g["command"]}
   {li["command"]}
   {t["command_line"]}
   {pf["command"]}
   {PAGE_COMMAND}

"""
    return "\n".join(
        [
            head + render_galanti(g),
            render_li(li),
            render_transferability(t),
            render_peft(pf),
        ]
    )


def load_assets(folder=ASSETS):
    out = {}
    for name in EXPERIMENTS:
        res = rc.read_json(os.path.join(folder, f"{name}.json"))
        if res is None:
            raise FileNotFoundError(
                f"{os.path.join(folder, name + '.json')} is missing; run "
                f"`{PAGE_COMMAND}` after the reproductions."
            )
        out[name] = res
    return out


def figures(name, res):
    """``{key: file name in the script's output folder}`` of one experiment's figures."""
    return FIXED_FIGURES.get(name, res.get("figures") or {})


def asset_name(name, fig):
    """The name of a figure's copy in docs/results/ (``<experiment>_<figure>``, or the
    figure's own name when it already starts with the experiment's)."""
    return fig if fig.startswith(name) else f"{name}_{fig}"


def collect(sources, folder=ASSETS):
    """Copy results.json and figures of the reproductions in ``sources`` into ``folder``.

    ``sources`` maps an experiment to the output folder of its script; the
    other experiments keep their copies in ``folder``.
    """
    os.makedirs(folder, exist_ok=True)
    for name, src in sources.items():
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; expected one of {EXPERIMENTS}.")
        res = rc.read_json(os.path.join(src, "results.json"))
        if res is None:
            raise FileNotFoundError(
                f"no {os.path.join(src, 'results.json')}: run benchmarks/reproduce_{name}.py first."
            )
        preset = res["config"].get("preset")
        if name in RELEASE_ONLY and preset != "release":
            raise ValueError(f"{src} holds a {preset!r} run; the page shows release runs only.")
        if res["config"].get("subset"):
            raise ValueError(f"{src} holds a run on a subset of the data sets or models.")
        if preset == "quick" or res["config"].get("quick"):
            raise ValueError(f"{src} holds a --quick run (a smoke test); publish a larger one.")
        for fig in figures(name, res).values():
            shutil.copyfile(os.path.join(src, fig), os.path.join(folder, asset_name(name, fig)))
        rc.write_json(os.path.join(folder, f"{name}.json"), res)
        if name in DRAWN_FIGURES:
            draw_peft(res, os.path.join(folder, DRAWN_FIGURES[name]))
        print(f"copied {name} from {src}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that docs/results.rst matches docs/results/*.json",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="copy experiment NAME's results from DIR (repeatable); default: every "
        "experiment whose benchmarks/results/<NAME>/results.json exists",
    )
    args = p.parse_args(argv)
    if args.check:
        text = render(load_assets())
        with open(PAGE, encoding="utf-8") as fh:
            ok = fh.read() == text
        print(
            "docs/results.rst is up to date."
            if ok
            else f"docs/results.rst is stale: run `{PAGE_COMMAND}`."
        )
        return 0 if ok else 1
    if args.source:
        sources = dict(item.split("=", 1) for item in args.source)
    else:
        sources = {
            name: os.path.join(rc.RESULTS_DIR, name)
            for name in EXPERIMENTS
            if os.path.exists(os.path.join(rc.RESULTS_DIR, name, "results.json"))
        }
    collect(sources)
    text = render(load_assets())
    with open(PAGE, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {os.path.relpath(PAGE, rc.REPO_DIR)} and {os.path.relpath(ASSETS, rc.REPO_DIR)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
