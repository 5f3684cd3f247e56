"""Sphinx configuration of the sknc documentation.

Build (from the repository root)::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

Generated, git-ignored paths: ``docs/_build/`` (output), ``docs/gen_modules/``
(autosummary API pages and sphinx-gallery back-references),
``docs/auto_examples/`` (the rendered gallery) and
``docs/sg_execution_times.rst``.

Gallery execution: example files named ``plot_*.py`` are executed at every
build (they must take seconds); any other example file (``long_*.py`` by
convention) is rendered without being run, unless the environment variable
``SKNC_DOCS_EXECUTE_ALL=1`` is set (done before each release of numbers).
"""

import os
import re
import sys
import warnings

# Make the package importable when building from a source checkout without
# an editable install.
sys.path.insert(0, os.path.abspath(".."))
# local Sphinx helpers (the gallery order)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sphinxext"))

import sknc

# -- project -----------------------------------------------------------------

project = "sknc"
author = "sknc developers"
copyright = "sknc developers, BSD-3-Clause"
version = release = sknc.__version__

# -- extensions --------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

# No intersphinx: the build machines have no network, and a failed inventory
# fetch would be a warning (an error under -W).

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
root_doc = "index"
default_role = "literal"  # `x` renders as code, as in numpydoc docstrings
nitpicky = False

# -- autodoc / autosummary / numpydoc -----------------------------------------

autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"  # types are in the numpydoc Parameters sections
autodoc_default_options = {"members": False, "inherited-members": False}
autodoc_member_order = "bysource"

numpydoc_show_class_members = False  # methods are listed by our class template
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- HTML ----------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"sknc {version}"
html_static_path = ["_static"]
html_css_files = ["sknc.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": True,
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "getting_started": [], "contributing": []}
html_show_sourcelink = False

# -- math ----------------------------------------------------------------------

# shared LaTeX macros for the user guide
mathjax3_config = {
    "tex": {
        "macros": {
            "R": r"\mathbb{R}",
            "tr": r"\operatorname{tr}",
            "SW": r"\Sigma_W",
            "SB": r"\Sigma_B",
            "muG": r"\mu_G",
        }
    }
}

# -- sphinx-gallery --------------------------------------------------------------

_EXECUTE_ALL = os.environ.get("SKNC_DOCS_EXECUTE_ALL", "").strip().lower() in (
    "1",
    "true",
    "yes",
)

sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["auto_examples"],
    # plot_*.py run in every build (CI); other examples only with
    # SKNC_DOCS_EXECUTE_ALL=1 (see the contributing page)
    "filename_pattern": r".*\.py$" if _EXECUTE_ALL else re.escape(os.sep) + r"plot_",
    "ignore_pattern": r"__init__\.py|" + re.escape(os.sep) + r"_",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "backreferences_dir": os.path.join("gen_modules", "backreferences"),
    "doc_module": ("sknc",),
    "download_all_examples": False,
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 1,
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),
}

# Examples print progress bars and warnings to stderr; keep the build output quiet.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Matplotlib must not try to open windows while examples run.
os.environ.setdefault("MPLBACKEND", "agg")

# The ``>>>`` examples of the user guide are run by tests/test_docs.py (plain
# doctest), not by a Sphinx builder.

warnings.filterwarnings("ignore", category=DeprecationWarning, module="timm")
