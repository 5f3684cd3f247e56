"""The ``sknc`` command (also ``python -m sknc``).

Sub-commands
------------
sknc demo
    The embedded default experiment, end to end: pre-train a small backbone
    on the source glyph classes, watch its features collapse on new classes,
    few-shot accuracy, NC1 against transfer accuracy, fine-tuning methods on
    scarce data. Writes ``results.json``, figures and ``report.md``.
sknc evaluate --model NAME [--weights FILE] --data DIR
    Collapse per block, linear-probe and few-shot accuracy of a backbone's
    frozen features on your own ImageFolder-style images.
sknc rank --model A --model B ... --data DIR [--probe]
    Every transferability score (NC1, CDNV, LogME, SFDA, NCTI, ...) of each
    backbone from one forward pass per model; with --probe, each score's
    weighted Kendall tau and top-1 regret against linear-probe accuracy.

What the user asked wrongly (a missing folder, an empty class, an unknown
model) is reported on stderr as ``sknc <command>: error: ...`` with exit
status 2 and no traceback, as argparse does for bad options.
"""

import argparse
import sys
import warnings

from .utils._options import INTERPOLATIONS

__all__ = ["build_parser", "main"]

_DEMO_HELP = """\
Pre-train a small timm backbone from scratch on the source classes of the
embedded glyph dataset (no download), keeping a checkpoint per epoch, then:
CDNV/NC1 on source-train, source-test and novel-class features per epoch;
5-way 1-/5-shot nearest-class-centre accuracy on the novel classes; NC1 of
each checkpoint on a downstream training set against its linear-probe
accuracy (Spearman, Kendall); linear probe / Layer FT / SCL-FT / full FT on
10% of the digits training set. Writes results.json, four PNG figures and
report.md to --out. About 3 minutes on a quiet 2-core CPU, at most 10 (--quick: about 1).
"""

_EVALUATE_HELP = """\
Frozen features of a backbone on an image folder laid out one sub-folder per
class (DIR/<class>/<image>): NC1, CDNV and NC2 per block (one forward pass),
linear-probe and few-shot accuracy of the penultimate features, and the most
collapsed block as a starting point for SCL-FT's tuned_block. Writes
results.json, layerwise_nc.png and report.md to --out.
"""


_RANK_HELP = """\
Frozen penultimate features of each model on an image folder (one forward
pass per model) and every transferability score of the field from them:
NC1, CDNV, LogME, H-score, NLEEP, TransRate, GBC, PARC, SFDA, PACTran,
k-NN, NCTI and ETran (across the models), LEEP and NCE (from the models'
classifier outputs of the same forward pass). With --probe, linear-probe
accuracy per model and each score's weighted Kendall tau, Kendall,
Spearman and top-1 regret against it. Writes results.json, scores.png and
report.md to --out.
"""


def _int_at_least(low, expected):
    """An argparse ``type``: an integer ``>= low``, else a usage error naming ``expected``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def _json_object(text):
    """An argparse ``type``: a JSON object (``{"zero_init_last": false}``) as a dict."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{...}}, got {text!r}")
    return value


def _fraction(text):
    """An argparse ``type``: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _channel_values(text):
    """An argparse ``type``: one number, or three separated by commas (per RGB channel)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(
            f"expected one number or three separated by commas (R,G,B), got {text!r}"
        )
    return values[0] if len(values) == 1 else tuple(values)


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _add_common(parser, default_out):
    parser.add_argument(
        "--out",
        default=default_out,
        metavar="DIR",
        help="output folder, overwritten on re-runs (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ... (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=_non_negative_int, default=0, help="random seed (default: %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: every usable core)",
    )
    parser.add_argument(
        "--no-progress",
        "-q",
        "--quiet",
        dest="progress",
        action="store_false",
        help="no progress bars or step lines",
    )


def build_parser():
    """The argument parser of the ``sknc`` command.

    Returns
    -------
    argparse.ArgumentParser
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sknc",
        description="Transfer learning through the lens of neural collapse "
        "(scikit-learn compatible).",
    )
    parser.add_argument("--version", action="version", version=f"sknc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,evaluate,rank}")
    sub.required = True

    _add_demo_parser(sub)
    _add_evaluate_parser(sub)
    _add_rank_parser(sub)
    return parser


def _add_demo_parser(sub):
    """The ``sknc demo`` sub-command."""
    from .experiments import PRESETS

    demo = sub.add_parser(
        "demo",
        help="the embedded experiment, end to end (no download)",
        description=_DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(demo, "sknc_results/demo")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="fewer epochs and episodes: about 1 minute on a quiet 2-core CPU",
    )
    demo.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    default, quick = PRESETS["default"], PRESETS["quick"]
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"pre-training epochs (default: {default.epochs}; --quick: {quick.epochs})",
    )
    demo.add_argument("--model", default=None, help=f"timm model name (default: {default.model})")
    demo.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        metavar="PX",
        help=f"image side in pixels (default: {default.image_size})",
    )
    demo.add_argument(
        "--downstream",
        choices=("novel", "digits"),
        default="novel",
        help="data of the NC1-vs-transfer study: the novel glyph classes or "
        "scikit-learn's digits (default: %(default)s)",
    )
    demo.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="copy the per-epoch checkpoints to OUT/checkpoints",
    )
    demo.add_argument(
        "--resume",
        action="store_true",
        help="continue the pre-training of an interrupted run (Ctrl-C) from the "
        "checkpoints it kept in OUT/interrupted_checkpoints",
    )
    demo.set_defaults(subparser=demo)


def _add_evaluate_parser(sub):
    """The ``sknc evaluate`` sub-command."""
    ev = sub.add_parser(
        "evaluate",
        help="collapse and transfer of a backbone on your images",
        description=_EVALUATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument(
        "--model",
        required=True,
        help="timm model name, e.g. resnet18; or a Hugging Face text model (local folder "
        "or hub id), which makes --data texts",
    )
    ev.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="image folder: DIR/<class name>/<images>; for a text model DIR/<class>/<file>.txt "
        "or a .csv/.tsv file with text and label columns",
    )
    ev.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="local weight file (.safetensors, .pth), e.g. a checkpoint of "
        "'sknc demo --keep-checkpoints'",
    )
    ev.add_argument(
        "--pretrained",
        action="store_true",
        help="timm's hub weights (needs network access or a local cache)",
    )
    ev.add_argument(
        "--layers",
        default=None,
        help="comma-separated block indices or module paths "
        "(default: every block; the penultimate features are always added)",
    )
    _add_preprocessing_args(ev)
    ev.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="images per forward pass (default: %(default)s)",
    )
    ev.add_argument(
        "--episodes",
        type=_positive_int,
        default=600,
        help="few-shot episodes per protocol (default: %(default)s)",
    )
    ev.add_argument(
        "--no-transferability",
        dest="transferability",
        action="store_false",
        help="leave out the transferability scores (LogME, SFDA, ...) of the penultimate "
        "features; k-NN and NLEEP grow quadratically with the number of images",
    )
    _add_common(ev, "sknc_results/evaluate")
    ev.set_defaults(subparser=ev)


def _add_preprocessing_args(ev):
    """``sknc evaluate``'s options of the image preprocessing and the model."""
    ev.add_argument(
        "--input-size",
        type=_positive_int,
        default=None,
        metavar="PX",
        help="resize and centre-crop images to PX x PX (default: the model's); "
        "at 64 px or less the crop keeps the whole image unless --crop-pct is given",
    )
    ev.add_argument(
        "--crop-pct",
        type=_fraction,
        default=None,
        metavar="F",
        help="share of the resized image kept by the centre crop, in (0, 1] "
        "(default: the model's; 1 for --input-size of 64 px or less)",
    )
    ev.add_argument(
        "--mean",
        type=_channel_values,
        default=None,
        metavar="M",
        help="normalisation mean, one value or R,G,B (default: the model's)",
    )
    ev.add_argument(
        "--std",
        type=_channel_values,
        default=None,
        metavar="S",
        help="normalisation standard deviation, one value or R,G,B (default: the model's)",
    )
    ev.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default=None,
        help="resize filter (default: the model's)",
    )
    ev.add_argument(
        "--model-kwargs",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="extra timm model options as a JSON object, e.g. "
        "'{\"zero_init_last\": false}' for a random-initialisation baseline",
    )


def _add_rank_parser(sub):
    """The ``sknc rank`` sub-command."""
    rk = sub.add_parser(
        "rank",
        help="every transferability score of several backbones on your images",
        description=_RANK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rk.add_argument(
        "--model",
        required=True,
        action="append",
        metavar="NAME[=FILE]",
        help="timm model name, optionally with a local weight file; repeat for each model",
    )
    rk.add_argument(
        "--data", required=True, metavar="DIR", help="image folder: DIR/<class name>/<images>"
    )
    rk.add_argument(
        "--pretrained",
        action="store_true",
        help="timm's hub weights for models without a weight file (needs network or a cache)",
    )
    rk.add_argument(
        "--probe",
        action="store_true",
        help="measure linear-probe accuracy and judge every score against it",
    )
    rk.add_argument(
        "--scores",
        default=None,
        metavar="LIST",
        help="comma-separated scores (default: all of them)",
    )
    rk.add_argument(
        "--input-size",
        type=_positive_int,
        default=None,
        metavar="PX",
        help="resize and centre-crop images to PX x PX (default: each model's)",
    )
    rk.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="images per forward pass (default: %(default)s)",
    )
    _add_common(rk, "sknc_results/rank")
    rk.set_defaults(subparser=rk)


def _run(args):
    """Run the sub-command of ``args`` and print its summary lines."""
    run = {"demo": _run_demo, "evaluate": _run_evaluate, "rank": _run_rank}[args.command]
    print("\n".join(run(args)))


def _run_rank(args):
    from .experiments import run_rank

    results = run_rank(
        args.model,
        args.data,
        pretrained=args.pretrained,
        probe=args.probe,
        scores=None if args.scores is None else [s.strip() for s in args.scores.split(",")],
        input_size=args.input_size,
        batch_size=args.batch_size,
        device=args.device,
        out_dir=args.out,
        seed=args.seed,
        threads=args.threads,
        progress=args.progress,
    )
    lines = [
        f"sknc rank: report written to {args.out}/report.md ({results['timing']['total']:.0f} s)",
        f"  predicted best by {results['rank_by']}: {results['table'][0]['backbone']}",
    ]
    for name, ev in results["evaluation"].items():
        tau, regret = ev["weighted_tau"], ev["top1_regret"]
        lines.append(
            f"  {name}: weighted tau {'n/a' if tau is None else f'{tau:.2f}'}, "
            f"top-1 regret {'n/a' if regret is None else f'{regret:.3g}'}"
        )
    return lines


def _run_demo(args):
    from .experiments import run_demo

    if args.quick and args.tiny:
        raise _Usage("--quick and --tiny exclude each other")
    preset = "tiny" if args.tiny else "quick" if args.quick else "default"
    results = run_demo(
        args.out,
        preset=preset,
        epochs=args.epochs,
        model=args.model,
        image_size=args.size,
        downstream=args.downstream,
        device=args.device,
        seed=args.seed,
        threads=args.threads,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume,
        progress=args.progress,
    )
    verdicts = [f"  {c['title']}: {c['status']}" for c in results["claims"].values()]
    return [
        f"sknc demo: report written to {args.out}/report.md ({results['timing']['total']:.0f} s)"
    ] + verdicts


def _run_evaluate(args):
    from .experiments import run_evaluate

    results = run_evaluate(
        args.model,
        args.data,
        weights=args.weights,
        pretrained=args.pretrained,
        layers=args.layers,
        input_size=args.input_size,
        crop_pct=args.crop_pct,
        mean=args.mean,
        std=args.std,
        interpolation=args.interpolation,
        model_kwargs=args.model_kwargs,
        batch_size=args.batch_size,
        device=args.device,
        out_dir=args.out,
        seed=args.seed,
        n_episodes=args.episodes,
        threads=args.threads,
        progress=args.progress,
        transferability=args.transferability,
    )
    lp, best = results["linear_probe"], results["suggested_tuned_block"]
    lines = [
        f"sknc evaluate: report written to {args.out}/report.md "
        f"({results['timing']['total']:.0f} s)",
        f"  linear probe {100 * lp['accuracy']:.1f}%",
    ]
    for s in results["few_shot"]["shots"].values():
        lines.append(
            f"  {results['few_shot']['n_way']}-way {s['n_shot']}-shot "
            f"{100 * s['mean']:.1f}% ± {100 * s['ci95']:.1f}%"
        )
    if best is not None:
        lines.append(f"  suggested SCL-FT tuned_block: {best['layer']}")
    for row in results["layers"]:
        if row.get("error"):
            lines.append(f"  {row['layer']}: metrics undefined ({row['error']})")
    return lines


def _load_torch_with_passive_openmp():
    """Import torch with OpenMP threads that sleep, not spin, while they wait.

    torch's OpenMP threads busy-wait between operations by default. When
    other processes compete for the cores, a spinning thread holds a core
    that the thread it waits for needs, and training runs many times slower
    (we measured 5x to 40x on a shared 2-core machine); with
    ``OMP_WAIT_POLICY=PASSIVE`` they sleep instead. The variable is read
    once, when torch loads its OpenMP runtime, so it is set only around the
    first import of torch, and only if the user has not set it.
    """
    import os

    if "torch" in sys.modules or _omp_wait_policy_set(os.environ):
        return
    previous = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        import torch  # noqa: F401
    finally:
        if previous is None:
            del os.environ["OMP_WAIT_POLICY"]
        else:
            os.environ["OMP_WAIT_POLICY"] = previous


def _omp_wait_policy_set(environ):
    """Whether the user chose an OpenMP wait policy (an empty value counts as unset).

    libgomp rejects an empty ``OMP_WAIT_POLICY`` ("Invalid value"), so an
    empty or blank value is treated as if the variable were not set.
    """
    return bool(environ.get("OMP_WAIT_POLICY", "").strip())


class _Usage(Exception):
    """A command-line usage error (reported like argparse's)."""


def main(argv=None):
    """Run the ``sknc`` command.

    Parameters
    ----------
    argv : list of str or None, default=None
        The arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success; 130 after Ctrl-C (the message on stderr says what was
        kept: an earlier report in ``--out`` is never overwritten by a
        partial run). Bad options and bad input (missing folder, empty
        class, unknown model, an ``--out`` that is a file or cannot be
        created) exit with status 2 through :class:`SystemExit`, before any
        work, with the message on stderr.

    Examples
    --------
    >>> from sknc.cli import main
    >>> main(["demo", "--quick"])  # doctest: +SKIP
    0
    """
    import matplotlib

    from .experiments import InputError, Interrupted

    matplotlib.use("Agg")  # files only: no display needed, none opened
    parser = build_parser()
    args = parser.parse_args(argv)
    _load_torch_with_passive_openmp()
    with warnings.catch_warnings():
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            _run(args)
        except (InputError, _Usage) as exc:
            args.subparser.error(str(exc))  # prints usage + "sknc <command>: error: ...", exits 2
        except Interrupted as exc:
            print(f"sknc {args.command}: {exc}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print(
                f"sknc {args.command}: interrupted; nothing in {args.out} was overwritten.",
                file=sys.stderr,
            )
            return 130
    return 0
