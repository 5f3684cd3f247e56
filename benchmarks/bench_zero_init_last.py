"""Frozen random-init timm ResNet features with and without ``zero_init_last``.

timm zeroes the last BatchNorm of every residual block (``zero_init_last=True``),
so a *random* ResNet used as a frozen feature extractor barely uses its blocks.
This measures the linear-probe accuracy of both variants of a random
``resnet18`` on scikit-learn's digits at 32 px (5-fold cross-validation,
StandardScaler + LogisticRegression), the figure quoted in the features user
guide and the ``BackboneFeatures`` docstring::

    python benchmarks/bench_zero_init_last.py
"""

import argparse
import warnings

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknc.datasets import load_digits_images
from sknc.features import BackboneFeatures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    X, y = load_digits_images(return_X_y=True)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    acc = {}
    for name, kwargs in (
        ("zero_init_last=True (timm default)", {}),
        ("zero_init_last=False", {"zero_init_last": False}),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the zero-scale warning itself
            Z = BackboneFeatures(
                args.model, input_size=32, random_state=args.seed, model_kwargs=kwargs, device="cpu"
            ).fit_transform(X)
        acc[name] = cross_val_score(probe, Z, y, cv=5).mean()
        print(f"{args.model} random init, {name:<36} linear probe {100 * acc[name]:5.1f}%")
    base, other = acc.values()
    print(f"ratio (zero_init_last=False / timm default): {other / base:.2f}x")


if __name__ == "__main__":
    main()
