"""Build the documentation's results page from the reproductions' ``results.json``.

``docs/results.rst`` is generated, never edited by hand: this script copies
``results.json`` and the figures of ``benchmarks/reproduce_galanti.py`` and
``benchmarks/reproduce_li.py`` into ``docs/results/`` and renders the page
from those copies, so every number on the page is one the scripts wrote
(``tests/test_results_page.py`` re-renders the page from ``docs/results/*.json``
and compares).

Run (from the repository root, after both reproductions)::

    python benchmarks/reproduce_results_page.py            # copy results, write the page
    python benchmarks/reproduce_results_page.py --check    # exit 1 if the page is stale
"""

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _repro_common as rc

from sknc.experiments import _format as fmt
from sknc.experiments._format import count, finite, num, p_equals, pct

DOCS_DIR = os.path.join(rc.REPO_DIR, "docs")
PAGE = os.path.join(DOCS_DIR, "results.rst")
ASSETS = os.path.join(DOCS_DIR, "results")  # docs/results/<experiment>.json + figures
EXPERIMENTS = ("galanti", "li")
PAGE_COMMAND = "python benchmarks/reproduce_results_page.py"
TASK_NAMES = {"fashion_mnist": "Fashion-MNIST", "emoji_category": "emoji categories"}
METHOD_NAMES = {
    "linear-probe": "linear probe",
    "layer-ft": "Layer FT",
    "scl-ft": "SCL-FT",
    "full-ft": "full FT",
}


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


def render(results):
    """The whole page (str) from ``{"galanti": ..., "li": ...}``."""
    g, li = results["galanti"], results["li"]
    claims = [(g, c) for c in g["claims"].values()] + [(li, c) for c in li["claims"].values()]
    summary = table(
        ["paper", "claim", "here"],
        [[c["paper"], c["title"], c["status"]] for _, c in claims],
        widths=[20, 60, 20],
    )
    env = g["environment"]
    head = f"""\
.. _results:

.. This page is generated by ``{PAGE_COMMAND}`` from docs/results/*.json
   (copies of the reproductions' results.json); do not edit it by hand.

{heading("Results on real data", "#")}
The two papers behind sknc, reproduced with the toolkit on real data and real
pretrained weights that this project can fetch from package registries
(:doc:`user_guide/datasets`): artwork of seven emoji vendors, Fashion-MNIST and the
ImageNet weights of MobileNetV2 and EfficientNet-Lite0/1/2. Everything ran on a shared
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
{env["torch_threads"]} torch thread, sknc revision ``{env["git"]}``.

To reproduce everything (the data are fetched into the git-ignored ``benchmarks/data``):

.. code-block:: bash

   python benchmarks/fetch_data.py
   {g["command"]}
   {li["command"]}
   {PAGE_COMMAND}

"""
    return head + render_galanti(g) + "\n" + render_li(li)


def load_assets(folder=ASSETS):
    out = {}
    for name in EXPERIMENTS:
        res = rc.read_json(os.path.join(folder, f"{name}.json"))
        if res is None:
            raise FileNotFoundError(
                f"{os.path.join(folder, name + '.json')} is missing; run "
                f"`{PAGE_COMMAND}` after both reproductions."
            )
        out[name] = res
    return out


def collect(results_dir=rc.RESULTS_DIR, folder=ASSETS):
    """Copy results.json and figures of both reproductions into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for name in EXPERIMENTS:
        src = os.path.join(results_dir, name)
        res = rc.read_json(os.path.join(src, "results.json"))
        if res is None:
            raise FileNotFoundError(
                f"no {os.path.join(src, 'results.json')}: run benchmarks/reproduce_{name}.py first."
            )
        if res["config"].get("preset") != "release":
            raise ValueError(
                f"{src} holds a {res['config'].get('preset')!r} run; the page "
                "shows release runs only."
            )
        for fig in res["figures"].values():
            shutil.copyfile(os.path.join(src, fig), os.path.join(folder, f"{name}_{fig}"))
        rc.write_json(os.path.join(folder, f"{name}.json"), res)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that docs/results.rst matches docs/results/*.json",
    )
    p.add_argument("--results-dir", default=rc.RESULTS_DIR)
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
    collect(args.results_dir)
    text = render(load_assets())
    with open(PAGE, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {os.path.relpath(PAGE, rc.REPO_DIR)} and {os.path.relpath(ASSETS, rc.REPO_DIR)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
