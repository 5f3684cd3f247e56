"""Glyph dataset rendered from the fonts that ship with matplotlib.

Contents
--------
load_glyphs
    The public loader (cached on disk, deterministic for an int ``random_state``).
GLYPH_TYPEFACES, GLYPH_CHARACTERS, GLYPH_DROPPED
    The typeface table, the candidate character table (char, script) and the
    characters left out on purpose, each with its reason.
_glyph_table
    Which typefaces really draw which character (cmap / glyph-name check,
    non-empty ink, copied outlines counted once).
_render_sample
    One jittered rendering of one glyph.

Design
------
Each class is one character; each sample is one typeface drawing it (plus
``samples_per_typeface - 1`` extra jittered renderings). A typeface is one
font file (family x weight x style). DejaVu and STIX fonts have Unicode cmaps;
the Computer Modern (BaKoMa) fonts use TeX encodings, so their characters are
found by glyph name (Adobe Glyph List) instead of code point. A class only
gets samples from typefaces that really contain its glyph, and two typefaces
whose outlines of a character are copies of each other (DejaVu's oblique
faces, for instance, reuse the upright math symbols) count once. Classes
drawn by fewer than :data:`MIN_TYPEFACES` distinct typefaces are dropped.

Glyphs keep their natural size: every typeface is scaled so that its capital
height is the same fraction of the image, the baseline sits at a fixed row,
and the ink is centred horizontally. Lower-case letters therefore stay smaller
than capitals, so that pairs like ``c``/``C`` or Cyrillic ``н``/Latin ``H``
differ (only) by size, as in print.
"""

import functools
import os
import time
import unicodedata

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._base import _atomic_savez, _cache_key, _check_size, _to_rgb, get_data_home

# Bump when the rendering changes: old cache files are then ignored.
_GLYPHS_VERSION = 2

#: A class is kept only if at least this many distinct typefaces draw it.
MIN_TYPEFACES = 15

SCRIPTS = ("latin", "greek", "cyrillic", "digit", "symbol")

#: (file name in matplotlib's ``mpl-data/fonts/ttf``, typeface name, encoding).
GLYPH_TYPEFACES = (
    ("DejaVuSans.ttf", "DejaVu Sans", "unicode"),
    ("DejaVuSans-Bold.ttf", "DejaVu Sans Bold", "unicode"),
    ("DejaVuSans-Oblique.ttf", "DejaVu Sans Oblique", "unicode"),
    ("DejaVuSans-BoldOblique.ttf", "DejaVu Sans Bold Oblique", "unicode"),
    ("DejaVuSansMono.ttf", "DejaVu Sans Mono", "unicode"),
    ("DejaVuSansMono-Bold.ttf", "DejaVu Sans Mono Bold", "unicode"),
    ("DejaVuSansMono-Oblique.ttf", "DejaVu Sans Mono Oblique", "unicode"),
    ("DejaVuSansMono-BoldOblique.ttf", "DejaVu Sans Mono Bold Oblique", "unicode"),
    ("DejaVuSerif.ttf", "DejaVu Serif", "unicode"),
    ("DejaVuSerif-Bold.ttf", "DejaVu Serif Bold", "unicode"),
    ("DejaVuSerif-Italic.ttf", "DejaVu Serif Italic", "unicode"),
    ("DejaVuSerif-BoldItalic.ttf", "DejaVu Serif Bold Italic", "unicode"),
    ("STIXGeneral.ttf", "STIX General", "unicode"),
    ("STIXGeneralBol.ttf", "STIX General Bold", "unicode"),
    ("STIXGeneralItalic.ttf", "STIX General Italic", "unicode"),
    ("STIXGeneralBolIta.ttf", "STIX General Bold Italic", "unicode"),
    ("cmr10.ttf", "Computer Modern Roman", "tex"),
    ("cmb10.ttf", "Computer Modern Bold", "tex"),
    ("cmss10.ttf", "Computer Modern Sans", "tex"),
    ("cmti10.ttf", "Computer Modern Text Italic", "tex"),
    ("cmtt10.ttf", "Computer Modern Typewriter", "tex"),
    ("cmmi10.ttf", "Computer Modern Math Italic", "tex"),
    ("cmsy10.ttf", "Computer Modern Symbols", "tex"),
)

_LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkmnopqrstuvwxyzÆŒØÞæœøþðß"
_GREEK = "ΓΔΘΛΞΠΣΦΨΩαβγδεζηθικλμξπσςτυφχψω"
_CYRILLIC = "БДЖИЙЛУЦЧШЩЪЫЬЭЮЯвгджзийлмнптцчшщъыьэюя"
_DIGITS = "0123456789"
_SYMBOLS = "!#$%&()*+/<=>?@[\\]^{}~÷±§¶©®°€£¥¢∞√∫∇∀∃≤≥≈←→↑↓↔⊕⊗⊥†‡•¬‰№¿"

#: Candidate classes, in class order: (character, script).
GLYPH_CHARACTERS = tuple(
    [(c, "latin") for c in _LATIN]
    + [(c, "greek") for c in _GREEK]
    + [(c, "cyrillic") for c in _CYRILLIC]
    + [(c, "digit") for c in _DIGITS]
    + [(c, "symbol") for c in _SYMBOLS]
)

_SAME_AS = "looks the same as {} (kept)"
#: Characters deliberately left out, with the reason (homoglyphs and near-homoglyphs).
GLYPH_DROPPED = {
    **{g: _SAME_AS.format("Latin " + lat) for g, lat in zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX")},
    **{g: _SAME_AS.format("Latin " + lat) for g, lat in zip("АВЕКМНОРСТХ", "ABEKMHOPCTX")},
    **{g: _SAME_AS.format("Latin " + lat) for g, lat in zip("аеорсух", "aeopcyx")},
    "ο": _SAME_AS.format("Latin o"),
    "ν": "nearly the same as Latin v",
    "ρ": "nearly the same as Latin p",
    "Г": _SAME_AS.format("Greek Γ"),
    "П": _SAME_AS.format("Greek Π"),
    "Ф": _SAME_AS.format("Greek Φ"),
    "ф": "nearly the same as Greek φ",
    "к": "nearly the same as Greek κ",
    "З": "nearly the same as digit 3",
    "б": "nearly the same as digit 6",
    "l": "nearly the same as capital I in sans-serif faces",
    "|": "nearly the same as capital I in sans-serif faces",
    "×": "nearly the same as Latin x",
    "∧": "nearly the same as Greek Λ",
    "∨": "nearly the same as Latin v",
    "∪": "nearly the same as Latin U",
    "∩": "nearly the same as Cyrillic п",
    "⊂": "nearly the same as Latin C",
    "∈": "nearly the same as Greek ε",
    "∂": "nearly the same as Greek δ",
    "∝": "nearly the same as Greek α",
    "¡": "nearly the same as Latin i",
    "-": "too little ink to tell apart from other dashes",
    ".": "too little ink",
    ",": "too little ink",
    "'": "too little ink",
    "`": "too little ink",
}

# Glyph names whose Adobe Glyph List code point is not the letter we want
# (AGL maps 'Delta' to the increment sign, 'Omega' to the ohm sign, 'mu' to
# the micro sign), or whose TeX glyph is another symbol (cmsy10 draws
# \heartsuit and \diamondsuit hollow).
_TEX_NAME_OVERRIDES = {
    "Delta": "Δ",
    "Omega": "Ω",
    "mu": "μ",
    "heart": "♡",
    "diamond": "♢",
}
# Per-font exceptions: cmti10 has the pound sign in the dollar slot (TeX's
# italic text fonts do), although the BaKoMa glyph is named 'dollar'.
_TEX_FONT_OVERRIDES = {"cmti10.ttf": {"dollar": "£"}}

# Rendering constants (fractions of the image side).
_CAP_HEIGHT = 0.48  # height of a capital letter
_BASELINE = 0.69  # row of the baseline (glyphs reach ~0.16 above, 0.84 below)
_MARGIN = 0.04  # ink never comes closer than this to the border
_COPY_TOLERANCE = 0.005  # mean |difference| below which two glyphs are one outline
_REF_SIZE = 64  # image side used to decide the class table (size-independent)


def _font_dir():
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.cache
def _face_charmaps():
    """For each available typeface: (index, name, path, {char: code point to draw})."""
    from fontTools import agl
    from fontTools.ttLib import TTFont

    wanted = {c for c, _ in GLYPH_CHARACTERS}
    faces = []
    for index, (fname, name, encoding) in enumerate(GLYPH_TYPEFACES):
        path = os.path.join(_font_dir(), fname)
        if not os.path.exists(path):
            continue
        cmap = TTFont(path, lazy=True).getBestCmap() or {}
        chars = {}
        if encoding == "unicode":
            for c in wanted:
                if ord(c) in cmap:
                    chars[c] = ord(c)
        else:
            # TeX-encoded BaKoMa font: identify glyphs by their PostScript name.
            overrides = {**_TEX_NAME_OVERRIDES, **_TEX_FONT_OVERRIDES.get(fname, {})}
            for code, gname in sorted(cmap.items()):
                uni = overrides.get(gname) or agl.toUnicode(gname)
                if len(uni) == 1 and uni in wanted and uni not in chars:
                    chars[uni] = code
        faces.append((index, name, path, chars))
    return tuple(faces)


@functools.cache
def _font(path, px):
    from PIL import ImageFont

    return ImageFont.truetype(path, px, layout_engine=ImageFont.Layout.BASIC)


@functools.cache
def _cap_height_per_em(path):
    """Ink height of 'H' per pixel of em size."""
    font = _font(path, 1000)
    _, top, _, bottom = font.getbbox("H", anchor="ls")
    return (bottom - top) / 1000.0


def _glyph_mask(path, code, em_px):
    """Tight anti-aliased mask of one glyph and its offset from (left, baseline).

    Returns ``(mask, (ox, oy))`` with ``mask`` a float32 array in [0, 1]
    (None if the glyph has no ink) and ``(ox, oy)`` the position of the mask's
    top-left pixel relative to the pen origin on the baseline.
    """
    from PIL import Image, ImageDraw

    font = _font(path, em_px)
    ch = chr(code)
    x0, y0, x1, y1 = font.getbbox(ch, anchor="ls")
    pad = 2 + em_px // 16
    w, h = max(x1 - x0, 1) + 2 * pad, max(y1 - y0, 1) + 2 * pad
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).text((pad - x0, pad - y0), ch, font=font, fill=255, anchor="ls")
    box = canvas.getbbox()
    if box is None:
        return None, (0, 0)
    canvas = canvas.crop(box)
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    if arr.sum() < 2.0:  # a speck, not a glyph
        return None, (0, 0)
    return arr, (x0 - pad + box[0], y0 - pad + box[1])


def _same_outline(a, b):
    """True if two glyph masks (same scale) are copies of one outline."""
    if abs(a.shape[0] - b.shape[0]) > 1 or abs(a.shape[1] - b.shape[1]) > 1:
        return False
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return float(np.abs(a[:h, :w] - b[:h, :w]).mean()) < _COPY_TOLERANCE


@functools.cache
def _glyph_table():
    """Class table: tuple of (char, script, ((face index, name, path, code), ...)).

    A typeface is listed for a character if its cmap (or glyph names) has the
    character, the glyph has ink, and its outline is not a copy of one drawn
    by a typeface listed before it (DejaVu's oblique faces, for instance,
    reuse the upright math symbols). Characters with fewer than
    MIN_TYPEFACES typefaces are dropped.
    """
    faces = _face_charmaps()
    S = _REF_SIZE
    table = []
    for ch, script in GLYPH_CHARACTERS:
        kept, outlines = [], []
        for index, name, path, chars in faces:
            if ch not in chars:
                continue
            em = max(4, round(_CAP_HEIGHT * S / _cap_height_per_em(path)))
            mask, _ = _glyph_mask(path, chars[ch], em)
            if mask is None:
                continue
            if any(_same_outline(mask, other) for other in outlines):
                continue
            outlines.append(mask)
            kept.append((index, name, path, chars[ch]))
        if len(kept) >= MIN_TYPEFACES:
            table.append((ch, script, tuple(kept)))
    return tuple(table)


def _affine_inverse(M, t):
    """PIL AFFINE coefficients for output p_o = M @ p_in + t (inverse map)."""
    Minv = np.linalg.inv(M)
    c = -Minv @ t
    return (Minv[0, 0], Minv[0, 1], c[0], Minv[1, 0], Minv[1, 1], c[1])


def _render_sample(mask, offset, size, ss, rng, jitter, noise):
    """Render one glyph mask into a (size, size) uint8 image.

    ``mask``/``offset`` come from :func:`_glyph_mask` at the supersampled scale
    ``ss``. The glyph is placed with its baseline at ``_BASELINE`` and its ink
    centred horizontally, then jittered (rotation, shear, scale, aspect,
    translation; all scaled by ``jitter``), kept inside the frame, drawn at
    ``ss`` times the final resolution and box-filtered down. ``noise`` scales
    the stroke noise: stroke thickening/thinning, blur, ink contrast and
    additive Gaussian noise. All randomness comes from ``rng``.
    """
    from PIL import Image, ImageFilter

    S = size * ss
    # Draw every random number up front, in a fixed order, so that the stream
    # does not depend on branches taken below.
    u = rng.uniform(-1.0, 1.0, size=10)

    h, w = mask.shape
    ox, oy = offset  # pen position of the mask's top-left pixel (baseline origin)
    img = Image.fromarray(np.round(mask * 255).astype(np.uint8))
    img_offset = np.array(offset, dtype=float)
    stroke = u[0] * noise
    radius = int(round(abs(stroke) * 0.5 * ss))
    if stroke < 0:
        radius = min(radius, 1)  # thinning more would erase hairlines
    if radius > 0:
        filt = ImageFilter.MaxFilter if stroke > 0 else ImageFilter.MinFilter
        pad = radius + 1
        big = Image.new("L", (img.width + 2 * pad, img.height + 2 * pad), 0)
        big.paste(img, (pad, pad))
        changed = big.filter(filt(2 * radius + 1))
        # Thinning must not erase hairlines: keep the original if it loses
        # too much ink.
        if stroke > 0 or np.asarray(changed, dtype=np.float32).sum() >= 0.6 * mask.sum() * 255:
            img = changed
            img_offset -= pad

    # Linear part of the jitter, applied around the centre of the ink box.
    centre = np.array([ox + w / 2.0, oy + h / 2.0])
    angle = np.deg2rad(8.0 * jitter * u[1])
    shear = 0.12 * jitter * u[2]
    scale = np.exp(0.08 * jitter * u[3])
    aspect = np.exp(0.05 * jitter * u[4])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    J = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale * aspect, scale / aspect])
    # Where the ink centre goes: centred horizontally, baseline at _BASELINE.
    target = np.array([S / 2.0, _BASELINE * S + centre[1]])
    target = target + 0.05 * S * jitter * u[5:7]

    # Keep the (jittered) ink box inside the frame: shrink, then slide.
    corners = np.array([[ox, oy], [ox + w, oy], [ox, oy + h], [ox + w, oy + h]], dtype=float)
    moved = (corners - centre) @ J.T
    lo, hi = moved.min(axis=0), moved.max(axis=0)
    room = S * (1 - 2 * _MARGIN)
    shrink = min(1.0, room / max(hi[0] - lo[0], 1e-9), room / max(hi[1] - lo[1], 1e-9))
    J = J * shrink
    lo, hi = lo * shrink, hi * shrink
    low_edge, high_edge = _MARGIN * S, (1 - _MARGIN) * S
    for axis in (0, 1):
        if target[axis] + lo[axis] < low_edge:
            target[axis] = low_edge - lo[axis]
        if target[axis] + hi[axis] > high_edge:
            target[axis] = high_edge - hi[axis]

    # Image pixel p maps to pen position p + img_offset, then to the output:
    # p_out = J @ (p + img_offset - centre) + target.
    t = target + J @ (img_offset - centre)
    coeffs = _affine_inverse(J, t)
    out = img.transform((S, S), Image.AFFINE, coeffs, resample=Image.BICUBIC, fillcolor=0)
    if ss > 1:
        out = out.reduce(ss)
    blur = 0.5 * noise * (u[7] + 1) / 2
    if blur > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(float(blur)))
    arr = np.asarray(out, dtype=np.float32)
    contrast = 1.0 - 0.15 * noise * (u[8] + 1) / 2
    arr = arr * contrast
    sigma = 6.0 * noise * (u[9] + 1) / 2
    if sigma > 0:
        arr = arr + rng.normal(0.0, sigma, size=arr.shape)
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def _supersampling(size):
    return max(1, min(4, 128 // size))


def _build_glyphs(size, samples_per_typeface, jitter, noise, seed, verbose, scripts=SCRIPTS):
    """Render the classes of the given scripts. Returns a dict of arrays."""
    table = [row for row in _glyph_table() if row[1] in scripts]
    ss = _supersampling(size)
    S = size * ss
    images, target, typeface = [], [], []
    iterator = enumerate(table)
    if verbose:
        from tqdm.auto import tqdm

        iterator = tqdm(list(iterator), desc="rendering glyphs", unit="class")
    for k, (ch, _script, faces) in iterator:
        for index, name, path, code in faces:
            em = max(4, round(_CAP_HEIGHT * S / _cap_height_per_em(path)))
            mask, offset = _glyph_mask(path, code, em)
            for rep in range(samples_per_typeface):
                ss_seq = np.random.SeedSequence(seed, spawn_key=(ord(ch), index, rep))
                rng = np.random.default_rng(ss_seq)
                images.append(_render_sample(mask, offset, size, ss, rng, jitter, noise))
                target.append(k)
                typeface.append(name)
    return {
        "images": np.stack(images),
        "target": np.asarray(target, dtype=np.int64),
        "typeface": np.asarray(typeface),
        "target_names": np.asarray([ch for ch, _, _ in table]),
        "script": np.asarray([script for _, script, _ in table]),
    }


def _glyph_descr(bunch, params, build_seconds):
    counts = np.bincount(bunch.target, minlength=len(bunch.target_names))
    n_faces = np.array(
        [len(np.unique(bunch.typeface[bunch.target == k])) for k in range(len(counts))]
    )
    per_script = ", ".join(
        f"{s}: {int(np.sum(bunch.script == s))}" for s in SCRIPTS if np.any(bunch.script == s)
    )
    kept = set(bunch.target_names)
    too_few = "".join(c for c, sc in GLYPH_CHARACTERS if sc in set(bunch.script) and c not in kept)
    return f"""Glyphs dataset (sknc)
---------------------

Characters rendered from the fonts that ship with matplotlib: one class per
character, one sample per typeface (x {params["samples_per_typeface"]} jittered renderings).

:Number of classes: {len(counts)} ({per_script})
:Number of samples: {len(bunch.target)}
:Typefaces: {len(bunch.typeface_names)} (DejaVu Sans / Sans Mono / Serif x 4 styles,
    STIX General x 4 styles, Computer Modern Roman, Bold, Sans, Text Italic,
    Typewriter, Math Italic and Symbols (calligraphic capitals))
:Typefaces per class: min {n_faces.min()}, median {np.median(n_faces):g}, max {n_faces.max()}
:Image size: {params["size"]} x {params["size"]}, uint8, bright ink on black
:Jitter: {params["jitter"]} (1.0 = rotation +-8 deg, shear +-0.12, scale +-8%,
    aspect +-5%, shift +-5% of the side)
:Stroke noise: {params["noise"]} (1.0 = stroke +-0.5 px, blur up to 0.5 px,
    ink contrast -15%, Gaussian noise sigma up to 6 grey levels)
:random_state: {params["random_state"]}

A typeface counts for a character only if it really has that glyph (Unicode
cmap, or glyph names for the TeX-encoded Computer Modern fonts) and its
outline is not a copy of another typeface's; characters drawn by fewer
than {MIN_TYPEFACES} distinct typefaces are dropped. Glyphs keep their natural size
(capital height = {_CAP_HEIGHT:.0%} of the side, fixed baseline), so lower-case
letters that are small capitals (c/C, o/O, s/S, v/V, w/W, x/X, z/Z, Cyrillic
в/B-like small capitals) are kept and differ from their capitals by size.

Left out on purpose (see ``sknc.datasets.GLYPH_DROPPED`` for each reason):
look-alikes of kept Latin letters (Greek ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ ο ν ρ, Cyrillic
АВЕКМНОРСТХ аеорсух), of kept Greek letters (Cyrillic Г П Ф ф к), of digits
(Cyrillic З б), of capital I (l, |), math symbols that look like letters
(× ∧ ∨ ∪ ∩ ⊂ ∈ ∂ ∝ ¡) and marks with too little ink (- . , ' `).
Candidates drawn by fewer than {MIN_TYPEFACES} distinct typefaces: {too_few or "none"}.

Use ``typeface`` as ``groups`` to hold out whole typefaces, and
``sknc.model_selection.source_novel_split`` for source / novel class splits.
Fonts: DejaVu (Bitstream Vera licence), STIX (SIL OFL), BaKoMa Computer Modern
(as distributed with matplotlib). Build time of this copy: {build_seconds:.1f} s.
"""


def load_glyphs(
    *,
    size=32,
    rgb=False,
    scripts=None,
    samples_per_typeface=1,
    jitter=1.0,
    noise=1.0,
    random_state=0,
    data_home=None,
    cache=True,
    return_X_y=False,
    verbose=False,
):
    """Load the glyph dataset: characters drawn by many typefaces.

    Every class is one character (Latin, Greek and Cyrillic letters, digits
    and common symbols: 170 classes after homoglyphs are removed); every
    sample is one typeface drawing it, with a small random affine jitter and
    stroke noise. Each class is drawn by at least 15 distinct typefaces out of
    the 23 font files that ship with matplotlib (DejaVu, STIX, Computer
    Modern). This is an Omniglot-like many-classes / few-samples set for the
    "train on source classes, test on novel classes" protocol, built locally
    in seconds and cached under ``data_home``.

    Read more in ``bunch.DESCR``.

    Parameters
    ----------
    size : int, default=32
        Side of the square images in pixels (at least 8).
    rgb : bool, default=False
        If True, ``images`` has shape (n_samples, size, size, 3) (the grey
        value repeated), ready for ImageNet backbones.
    scripts : str or list of str, default=None
        Keep only these scripts among ``'latin'``, ``'greek'``,
        ``'cyrillic'``, ``'digit'`` and ``'symbol'``. None keeps all. Class
        indices are renumbered from 0 in the kept order; images do not change.
    samples_per_typeface : int, default=1
        Number of jittered renderings per (character, typeface) pair.
    jitter : float, default=1.0
        Strength of the random affine jitter; 0 disables it, 1 is rotation up
        to 8 degrees, shear 0.12, scale and shift up to 8% and 5%.
    noise : float, default=1.0
        Strength of the stroke noise (thickening / thinning, blur, contrast,
        additive Gaussian noise); 0 disables it.
    random_state : int, RandomState instance or None, default=0
        Seeds the jitter and noise. Each sample gets its own stream derived
        from (random_state, character, typeface, repetition), so a sample does
        not change when other scripts are selected. Only int values are cached
        on disk.
    data_home : str or path-like, default=None
        Cache folder; see :func:`get_data_home`.
    cache : bool, default=True
        Read / write the rendered arrays from / to
        ``data_home/glyphs/glyphs-<key>.npz`` (written atomically). The key
        covers every parameter that changes the pixels and a format version.
    return_X_y : bool, default=False
        If True, return ``(images, target)`` instead of a Bunch. Note that
        ``images`` are image arrays (what ``sknc.features`` transformers take),
        not flattened vectors; use ``bunch.data`` for those.
    verbose : bool, default=False
        Show a progress bar while rendering.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        images : ndarray of shape (n_samples, size, size) or (n_samples, size, size, 3)
            uint8 images, bright ink on a black background.
        data : ndarray of shape (n_samples, n_pixels)
            The same pixels flattened (a view of ``images``).
        target : ndarray of shape (n_samples,)
            Class index of each sample.
        target_names : ndarray of shape (n_classes,)
            The character of each class.
        char_names : ndarray of shape (n_classes,)
            The Unicode name of each character.
        script : ndarray of shape (n_classes,)
            The script of each class.
        typeface : ndarray of shape (n_samples,)
            The typeface that drew each sample; use it as ``groups``.
        typeface_names : ndarray
            The sorted distinct typefaces.
        DESCR : str
            Description of the dataset.

    (images, target) : tuple if ``return_X_y`` is True

    See Also
    --------
    source_novel_split : Split classes into source / novel and hold out
        typefaces within the source classes.

    Examples
    --------
    >>> import tempfile
    >>> from sknc.datasets import load_glyphs
    >>> glyphs = load_glyphs(scripts="greek", data_home=tempfile.mkdtemp())
    >>> glyphs.images.shape[1:]
    (32, 32)
    >>> len(glyphs.target_names)
    32
    >>> bool((glyphs.script == "greek").all())
    True
    """
    size, wanted = _check_glyph_args(size, scripts, samples_per_typeface, jitter, noise)
    seed, cacheable = _glyph_seed(random_state)
    params = {
        "size": size,
        "samples_per_typeface": int(samples_per_typeface),
        "jitter": float(jitter),
        "noise": float(noise),
        "random_state": seed,
    }
    arrays = _glyph_arrays(params, wanted, data_home, cache and cacheable, verbose)
    build_seconds = float(arrays["build_seconds"])

    # Select scripts and renumber classes.
    script = arrays["script"]
    keep_classes = np.flatnonzero(np.isin(script, wanted))
    new_index = np.full(len(script), -1, dtype=np.int64)
    new_index[keep_classes] = np.arange(len(keep_classes))
    sample_mask = np.isin(arrays["target"], keep_classes)
    images = arrays["images"][sample_mask]
    target = new_index[arrays["target"][sample_mask]]
    if rgb:
        images = _to_rgb(images)
    target_names = arrays["target_names"][keep_classes]
    typeface = arrays["typeface"][sample_mask]
    if return_X_y:
        return images, target
    bunch = Bunch(
        images=images,
        data=images.reshape(len(images), -1),
        target=target,
        target_names=target_names,
        char_names=np.asarray([unicodedata.name(c, "") for c in target_names]),
        script=script[keep_classes],
        typeface=typeface,
        typeface_names=np.unique(typeface),
    )
    bunch.DESCR = _glyph_descr(bunch, params, build_seconds)
    return bunch


def _check_glyph_args(size, scripts, samples_per_typeface, jitter, noise):
    """Validate ``load_glyphs``' arguments; returns ``(size, wanted scripts)``."""
    size = _check_size(size)
    if scripts is None:
        wanted = SCRIPTS
    else:
        wanted = (scripts,) if isinstance(scripts, str) else tuple(scripts)
        unknown = sorted(set(wanted) - set(SCRIPTS))
        if unknown or not wanted:
            raise ValueError(
                f"scripts={scripts!r}: unknown script(s) {unknown}; choose among {list(SCRIPTS)}."
            )
    if (
        isinstance(samples_per_typeface, bool)
        or not isinstance(samples_per_typeface, (int, np.integer))
        or samples_per_typeface < 1
    ):
        raise ValueError(
            f"samples_per_typeface must be a positive int, got {samples_per_typeface!r}."
        )
    for pname, value in (("jitter", jitter), ("noise", noise)):
        if isinstance(value, bool) or not np.isscalar(value) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{pname} must be a finite number >= 0, got {value!r}.")
    if samples_per_typeface > 1 and jitter == 0 and noise == 0:
        raise ValueError(
            "samples_per_typeface > 1 with jitter=0 and noise=0 would only repeat "
            "identical images; raise jitter or noise."
        )
    return size, wanted


def _glyph_seed(random_state):
    """``(seed, cacheable)``: an int seed, and whether it came from an int (cacheable)."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        seed = int(random_state)
        if seed < 0:
            raise ValueError(f"random_state must be >= 0, got {seed}.")
        return seed, True
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max)), False


def _glyph_cache_path(params, data_home):
    """The cache file of the rendered arrays for ``params``."""
    import matplotlib
    import PIL
    from PIL import features

    key = _cache_key(
        {
            **params,
            "version": _GLYPHS_VERSION,
            # the fonts and the rasteriser can change the pixels
            "matplotlib": matplotlib.__version__,
            "pillow": PIL.__version__,
            "freetype": features.version("freetype2"),
        }
    )
    return os.path.join(get_data_home(data_home), "glyphs", f"glyphs-{key}.npz")


def _glyph_arrays(params, wanted, data_home, cache, verbose):
    """The rendered arrays: read from the cache, else rendered (and cached)."""
    path = _glyph_cache_path(params, data_home) if cache else None
    if path is not None and os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError):  # a corrupt file: rebuild it
            pass
    t0 = time.perf_counter()
    # A cached file holds every script (subsets are cut at load time);
    # without a cache, render only what was asked for.
    arrays = _build_glyphs(
        params["size"],
        params["samples_per_typeface"],
        params["jitter"],
        params["noise"],
        params["random_state"],
        verbose,
        scripts=SCRIPTS if path is not None else wanted,
    )
    arrays["build_seconds"] = np.float64(time.perf_counter() - t0)
    if path is not None:
        _atomic_savez(path, **arrays)
    return arrays
