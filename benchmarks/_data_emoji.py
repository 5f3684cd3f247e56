"""Emoji helpers for ``fetch_data.py``: join SVG emoji sets to emoji.json and render them.

The PNG vendors (Google, Twitter from ``emoji-datasource-*``) are already
keyed by code point. The SVG sets are not all: OpenMoji files are named by
code point, Fluent's iconify set has a ``chars.json`` (code point -> icon
name), but Noto v1, EmojiOne and Firefox OS only have CLDR-style names
("grinning-face", or "grinningface" for fxemoji). Those names are matched
against every name we know for each emoji of ``emoji.json``: Fluent's and
OpenMoji's names for the same code points, emoji-datasource's short names and
names, and the Unicode character name, compared with and without hyphens.

Rendered files are written as ``<out>/<vendor>/<image>`` where ``<image>`` is
emoji.json's file name for that emoji (e.g. ``1f600.png``), so that
``sknc.datasets.load_emoji`` joins all vendors by file name.
"""

import io
import json
import re
import unicodedata
from pathlib import Path


def norm_key(codepoints):
    """'1F600-FE0F' / '1f600_fe0f' -> '1f600' (lower case, no variation selectors)."""
    parts = re.split(r"[-_ ]", codepoints.strip().lower())
    return "-".join(p.lstrip("0") or "0" for p in parts if p and p != "fe0f")


def slug(text):
    text = text.replace("&", "and").replace("\u2019", "").replace("'", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def base_entries(emoji_json):
    """Map normalised key -> emoji.json entry (base emoji only)."""
    return {norm_key(e["unified"]): e for e in emoji_json}


def name_index(entries, extra_names):
    """Map name variants -> key, from emoji.json fields and extra (name, key) pairs."""
    index = {}

    def add(name, key):
        if not name or key not in entries:
            return
        s = slug(name)
        for variant in (s, s.replace("-", "")):
            index.setdefault(variant, key)

    for name, key in extra_names:  # most specific first: CLDR names of other sets
        add(name, key)
    for key, e in entries.items():
        for short in e.get("short_names") or []:
            add(short.replace("_", "-"), key)
        add(e.get("name"), key)
        cps = [c for c in e["unified"].split("-") if c.lower() != "fe0f"]
        if len(cps) == 1:
            add(unicodedata.name(chr(int(cps[0], 16)), ""), key)
    return index


def iconify_svgs(icons_json):
    """Yield (icon name, full SVG markup) for an iconify JSON icon set (aliases included)."""
    width = icons_json.get("width", 16)
    height = icons_json.get("height", 16)
    icons = icons_json["icons"]

    def svg(icon, hflip=False):
        w, h = icon.get("width", width), icon.get("height", height)
        left, top = icon.get("left", 0), icon.get("top", 0)
        body = icon["body"]
        if hflip or icon.get("hFlip"):
            body = f'<g transform="translate({2 * left + w} 0) scale(-1 1)">{body}</g>'
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{body}</svg>'
        )

    for name, icon in icons.items():
        yield name, svg(icon)
    for name, alias in (icons_json.get("aliases") or {}).items():
        parent = icons.get(alias.get("parent"))
        if parent is None or alias.get("rotate") or alias.get("vFlip"):
            continue
        yield (
            name,
            svg(
                {**parent, **{k: v for k, v in alias.items() if k != "parent"}},
                hflip=bool(alias.get("hFlip")),
            ),
        )


def render_png(svg, size, path):
    """Render SVG markup to a size x size RGBA PNG at ``path``."""
    import resvg_py
    from PIL import Image

    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, skip_system_fonts=True)
    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGBA")
        if im.size != (size, size):
            im = im.resize((size, size), Image.LANCZOS)
        tmp = path.with_suffix(".tmp.png")
        im.save(tmp)
        tmp.replace(path)


def join_iconify(icons_json, chars_json, entries, index):
    """Map emoji key -> SVG for one iconify set; returns (mapping, unmatched names)."""
    by_name = {}
    for cp, name in (chars_json or {}).items():
        key = norm_key(cp)
        if key in entries:
            by_name.setdefault(name, key)
    out, unmatched = {}, []
    for name, svg in iconify_svgs(icons_json):
        key = by_name.get(name) or index.get(name) or index.get(name.replace("-", ""))
        if key is None:
            unmatched.append(name)
            continue
        out.setdefault(key, svg)
    return out, unmatched


def write_vendor(mapping, entries, out_dir, size, log):
    """Render key -> SVG markup (or SVG file path) into out_dir/<image>; skip existing files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = failed = 0
    for key, svg in sorted(mapping.items()):
        target = out_dir / entries[key]["image"]
        if target.exists():
            done += 1
            continue
        markup = Path(svg).read_text(encoding="utf-8") if isinstance(svg, Path) else svg
        try:
            render_png(markup, size, target)
            done += 1
        except ValueError as exc:
            failed += 1
            if failed <= 3:
                log(f"    could not render {key}: {exc}")
    return done, failed


def load_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
