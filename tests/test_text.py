"""Text encoders: TextFeatures, text fine-tuning, text loaders, evaluate on text.

Everything runs on a tiny random-init BERT with a WordPiece tokenizer trained
here (tests/_text_helpers.py): nothing is downloaded.
"""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

from _text_helpers import CORPUS, make_tiny_bert
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline

from sknc.features import TextFeatures, list_layers
from sknc.features import _text as text_mod

LABELS = np.array(["pet", "pet", "fin", "fin", "wx", "wx", "sport", "sport"] * 3)
TEXTS = ["the cat sat on the mat", "rain", "a dog chased the ball in the park today", "rain"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(str(tmp_path_factory.mktemp("bert") / "bert"))


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory):
    return make_tiny_bert(
        str(tmp_path_factory.mktemp("st") / "st"), sentence_transformers=True, seed=1
    )


def _manual(bert_dir, texts, max_length=48):
    """Hand-written forward: tokenizer with padding, BertModel, masked mean."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(bert_dir)
    model = BertModel.from_pretrained(bert_dir).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    m = enc["attention_mask"].unsqueeze(-1).double()
    mean = [(h.double() * m).sum(1) / m.sum(1) for h in out.hidden_states]
    return mean, [h[:, 0].double() for h in out.hidden_states]


def test_import_does_not_load_transformers():
    code = (
        "import sys, sknc.features, sknc.datasets; "
        "print(any(m.split('.')[0] in ('transformers', 'sentence_transformers') "
        "for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_features_equal_hand_written_masked_mean(bert_dir):
    mean, cls = _manual(bert_dir, TEXTS)
    Z = TextFeatures(bert_dir).fit_transform(TEXTS)
    assert Z.dtype == np.float32 and Z.shape == (4, 32)
    np.testing.assert_allclose(Z, mean[-1].numpy(), rtol=1e-5, atol=1e-5)
    Zc = TextFeatures(bert_dir, pool="cls").fit_transform(TEXTS)
    np.testing.assert_allclose(Zc, cls[-1].numpy(), rtol=1e-5, atol=1e-5)
    # padding must not leak: a text alone equals the same text in a padded batch
    alone = TextFeatures(bert_dir).fit_transform(["rain"])
    np.testing.assert_allclose(alone[0], Z[1], rtol=1e-5, atol=1e-5)


def test_layer_taps_equal_output_hidden_states(bert_dir):
    mean, _ = _manual(bert_dir, TEXTS)
    feats = TextFeatures(bert_dir, layers=[0, "encoder.layer.0", -1, None]).fit()
    assert feats.layers_ == ["embeddings", "encoder.layer.0", "encoder.layer.2", "penultimate"]
    assert list_layers(bert_dir) == ["embeddings"] + [f"encoder.layer.{i}" for i in range(3)]
    parts = feats.transform_layers(TEXTS)
    for name, idx in [("embeddings", 0), ("encoder.layer.0", 1), ("encoder.layer.2", 3)]:
        np.testing.assert_allclose(parts[name], mean[idx].numpy(), rtol=1e-5, atol=1e-5)
    assert feats.get_feature_names_out()[0] == "embeddings__0"
    assert feats.n_features_out_ == 4 * 32


def test_sentence_transformers_pooling_matches_encode(st_dir):
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(st_dir, device="cpu").encode(TEXTS)
    feats = TextFeatures(st_dir).fit()
    assert feats.pools_ == {"penultimate": "auto"} and feats.max_length_ == 40
    np.testing.assert_allclose(feats.transform(TEXTS), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(feats.transform(TEXTS), axis=1), 1, atol=1e-5)


def test_sorting_dedup_and_input_forms_do_not_change_features(bert_dir):
    import pandas as pd

    texts = CORPUS[:8] + ["rain", CORPUS[0]]
    ref = TextFeatures(bert_dir, sort_by_length=False, batch_size=64).fit_transform(texts)
    for kw in ({"batch_size": 3}, {"batch_size": 1, "sort_by_length": True}):
        np.testing.assert_allclose(
            TextFeatures(bert_dir, **kw).fit_transform(texts), ref, rtol=1e-5, atol=1e-5
        )
    feats = TextFeatures(bert_dir).fit()
    for X in (
        np.asarray(texts),
        np.asarray(texts, dtype=object)[:, None],
        pd.Series(texts),
        pd.DataFrame({"t": texts}),
        tuple(texts),
    ):
        np.testing.assert_allclose(feats.transform(X), ref, rtol=1e-5, atol=1e-5)


def test_max_length_and_truncation(bert_dir):
    long = " ".join(CORPUS[:6])
    short = TextFeatures(bert_dir, max_length=5).fit_transform([long])
    mean, _ = _manual(bert_dir, [long], max_length=5)
    np.testing.assert_allclose(short, mean[-1].numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="more than max_length=5"):
        TextFeatures(bert_dir, max_length=5, truncation=False).fit_transform([long])


def test_errors(bert_dir, tmp_path):
    feats = TextFeatures(bert_dir).fit()
    with pytest.raises(TypeError, match=r"X\[1\] is not a str"):
        feats.transform(["a", 3])
    with pytest.raises(TypeError, match="missing value"):
        feats.transform(["a", None])
    with pytest.raises(TypeError, match="single str"):
        feats.transform("a cat")
    with pytest.raises(ValueError, match="X is empty"):
        feats.transform([])
    with pytest.raises(ValueError, match="Unknown layer 'encoder.layer.9'"):
        TextFeatures(bert_dir, layers="encoder.layer.9").fit()
    with pytest.raises(ValueError, match="out of range"):
        TextFeatures(bert_dir, layers=7).fit()
    with pytest.raises(ValueError, match="config.json"):
        TextFeatures(str(tmp_path)).fit()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="Could not load the text model"):
        TextFeatures(str(broken)).fit()
    with pytest.raises(ValueError, match="pool must be"):
        TextFeatures(bert_dir, pool="median").fit()


def test_clone_and_pickle_do_not_reload_and_leave_weights_out(bert_dir, monkeypatch):
    feats = TextFeatures(bert_dir).fit()
    Z = feats.transform(TEXTS)
    calls = []
    real = text_mod._load
    monkeypatch.setattr(text_mod, "_load", lambda *a, **k: calls.append(a) or real(*a, **k))
    clone(feats).fit()
    blob = pickle.dumps(feats)
    assert len(blob) < 20_000  # the tiny BERT alone is > 100 kB
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.transform(TEXTS), Z)
    assert calls == []  # shared within the process
    heavy = pickle.dumps(TextFeatures(bert_dir, store_weights_in_pickle=True).fit())
    assert len(heavy) > 100_000
    text_mod._LOADED.clear()
    back = pickle.loads(heavy)
    np.testing.assert_allclose(back.transform(TEXTS), Z, rtol=1e-6)
    assert calls == []  # weights came from the pickle
    back = pickle.loads(blob)
    np.testing.assert_allclose(back.transform(TEXTS), Z, rtol=1e-6)
    assert len(calls) == 1  # reloaded lazily, once


def test_random_init_is_seeded(bert_dir):
    a = TextFeatures(bert_dir, pretrained=False, random_state=0).fit_transform(TEXTS)
    b = TextFeatures(bert_dir, pretrained=False, random_state=0).fit_transform(TEXTS)
    c = TextFeatures(bert_dir).fit_transform(TEXTS)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_memory_cache_keyed_on_tokenizer_settings(bert_dir, tmp_path):
    feats = TextFeatures(bert_dir, memory=str(tmp_path)).fit()
    Z = feats.transform(TEXTS)
    np.testing.assert_array_equal(feats.transform(TEXTS), Z)
    short = TextFeatures(bert_dir, memory=str(tmp_path), max_length=3).fit()
    assert not np.allclose(short.transform(TEXTS), Z)
    assert short._cache_key(TEXTS) != feats._cache_key(TEXTS)
    assert feats._cache_key(TEXTS) == clone(feats).fit()._cache_key(TEXTS)
    assert feats._cache_key(TEXTS) != feats._cache_key(TEXTS[::-1])


def test_pipeline_nc_scorers_and_episodes(bert_dir):
    from sknc.metrics import make_nc_scorer
    from sknc.model_selection import EpisodeSplit, evaluate_episodes
    from sknc.neighbors import NearestClassCenter

    pipe = make_pipeline(TextFeatures(bert_dir), LogisticRegression(max_iter=200))
    res = cross_validate(
        pipe,
        CORPUS,
        LABELS,
        cv=3,
        scoring={"acc": "accuracy", "nc1": make_nc_scorer("nc1")},
    )
    assert np.isfinite(res["test_acc"]).all() and np.isfinite(res["test_nc1"]).all()
    Z = TextFeatures(bert_dir).fit_transform(CORPUS)
    assert NearestClassCenter().fit(Z, LABELS).score(Z, LABELS) > 0.25
    cv = EpisodeSplit(n_way=2, n_shot=1, n_query=1, n_episodes=5, random_state=0)
    out = evaluate_episodes(Z, LABELS, cv=cv)
    assert 0 <= out.mean <= 1


@pytest.mark.parametrize("method", ["linear-probe", "layer-ft", "scl-ft", "full-ft"])
def test_finetuning_methods_on_strings(bert_dir, method):
    from sknc.finetune import FineTuningClassifier

    clf = FineTuningClassifier(bert_dir, method=method, max_epochs=3, lr=1e-2, random_state=0)
    clf.fit(CORPUS, LABELS)
    assert clf.predict(CORPUS[:3]).shape == (3,)
    assert set(clf.predict(CORPUS)) <= set(LABELS)
    assert clf.transform(CORPUS[:2]).shape == (2, 32)
    expected_block = {"layer-ft": "encoder.layer.1", "scl-ft": "encoder.layer.1"}
    assert clf.tuned_block_ == expected_block.get(method)
    assert clf.prefix_cached_ == (method != "full-ft")
    if method in ("layer-ft", "scl-ft"):
        assert 0 < clf.trainable_fraction_ < 0.5
    again = FineTuningClassifier(bert_dir, method=method, max_epochs=3, lr=1e-2, random_state=0)
    np.testing.assert_array_equal(
        again.fit(CORPUS, LABELS).decision_function(CORPUS), clf.decision_function(CORPUS)
    )
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(back.decision_function(CORPUS), clf.decision_function(CORPUS))


def test_scl_ft_starts_at_layer_ft(bert_dir):
    from sknc.finetune import FineTuningClassifier

    kw = {"max_epochs": 0, "random_state": 0, "compute_train_nc1": False}
    scl = FineTuningClassifier(bert_dir, method="scl-ft", **kw).fit(CORPUS, LABELS)
    layer = FineTuningClassifier(bert_dir, method="layer-ft", **kw).fit(CORPUS, LABELS)
    np.testing.assert_allclose(scl.transform(CORPUS), layer.transform(CORPUS), atol=1e-6)
    assert scl.n_trainable_params_ > layer.n_trainable_params_


def test_finetuning_grid_search_and_text_features_model(st_dir):
    from sknc.finetune import FineTuningClassifier

    base = FineTuningClassifier(TextFeatures(st_dir, max_length=16), max_epochs=2, random_state=0)
    gs = GridSearchCV(base, {"method": ["linear-probe", "scl-ft"]}, cv=2).fit(CORPUS, LABELS)
    assert gs.best_params_["method"] in ("linear-probe", "scl-ft")
    assert gs.best_estimator_.data_config_["max_length"] == 16
    with pytest.raises(ValueError, match="apply to images only"):
        FineTuningClassifier(st_dir, input_size=32).fit(CORPUS, LABELS)
    with pytest.raises(ValueError, match="Unknown layer"):
        FineTuningClassifier(st_dir, method="layer-ft", tuned_block="blocks.3").fit(CORPUS, LABELS)
    with pytest.raises(ValueError, match="apply to images only"):
        FineTuningClassifier(st_dir, crop_pct=0.9).fit(CORPUS, LABELS)
    with pytest.raises(TypeError, match="not a str"):
        FineTuningClassifier(st_dir, max_epochs=1).fit([1, 2] * 12, LABELS)


def test_is_text_model(bert_dir, tmp_path):
    from sknc.features._text import is_text_model

    assert is_text_model(bert_dir)
    assert is_text_model("sentence-transformers/all-MiniLM-L6-v2")
    assert is_text_model(TextFeatures(bert_dir))
    assert not is_text_model("resnet18")
    assert not is_text_model("hf-hub:timm/resnet18.a1_in1k")
    assert not is_text_model(str(tmp_path))


# ----------------------------------------------------------------------------- datasets
def _write_text_data(root):
    brown = root / "text" / "brown"
    brown.mkdir(parents=True)
    (brown / "cats.txt").write_text("ca01 news\ncb01 editorial\n")
    (brown / "ca01").write_text(
        "\n\n\tThe/at jury/nn said/vbd ``/`` no/at '/' ./.\n\n\tIt/pps rained/vbd ./.\n"
    )
    (brown / "cb01").write_text("\n\n\tOpinions/nns differ/vb ./.\n")
    fort = root / "text" / "fortunes"
    fort.mkdir()
    (fort / "art").write_text("one quote\n%\ntwo\n  quote\n%\n")
    (fort / "art.dat").write_bytes(b"\x00\x01")
    (fort / "food").write_text("eat\n%\n")
    spam = root / "text" / "spam-assassin"
    for group in ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"):
        (spam / group).mkdir(parents=True)
        (spam / group / "0001.json").write_text(
            '{"text": "Subject: hi\\nFrom: x\\n\\nbody of ' + group + '"}'
        )
    deb = root / "text" / "debian"
    deb.mkdir()
    (deb / "descriptions.tsv").write_text(
        "package\tsection\tdescription\n0ad\tgames\tReal-time strategy game\n"
        "vim\teditors\tVi IMproved\nemacs\teditors\tGNU Emacs\n"
    )


def test_text_loaders(tmp_path):
    from sknc.datasets import (
        load_brown,
        load_debian_descriptions,
        load_fortunes,
        load_spam_assassin,
    )

    _write_text_data(tmp_path)
    brown = load_brown(data_home=tmp_path)
    assert brown.data[0] == "The jury said \"no ' . It rained ."
    assert list(brown.target) == ["news", "editorial"]
    para = load_brown(data_home=tmp_path, unit="paragraph", min_words=1)
    assert len(para.data) == 3 and list(para.groups) == ["ca01", "ca01", "cb01"]
    X, y = load_fortunes(data_home=tmp_path, min_count=1, return_X_y=True)
    assert X == ["one quote", "two quote", "eat"] and list(y) == ["art", "art", "food"]
    assert load_fortunes(data_home=tmp_path, min_count=2).data == ["one quote", "two quote"]
    spam = load_spam_assassin(data_home=tmp_path)
    assert spam.data[0] == "body of easy-ham-1" and list(spam.target_names) == ["ham", "spam"]
    assert "Subject: hi" in load_spam_assassin(data_home=tmp_path, headers=True).data[0]
    deb = load_debian_descriptions(data_home=tmp_path, min_count=2)
    assert deb.data == ["Vi IMproved", "GNU Emacs"] and list(deb.package) == ["vim", "emacs"]
    with pytest.raises(FileNotFoundError, match="fetch_data.py"):
        load_brown(data_home=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unit must be"):
        load_brown(data_home=tmp_path, unit="word")


@pytest.mark.skipif(
    not os.path.isdir(os.path.join(os.environ.get("SKNC_DATA", "/nonexistent"), "text")),
    reason="real text data not fetched (benchmarks/fetch_data.py --only text)",
)
def test_real_text_loaders_shapes():
    from sknc.datasets import load_brown, load_fortunes

    brown = load_brown()
    assert len(brown.data) == 500 and len(brown.target_names) == 15
    assert len(load_fortunes().target_names) >= 30


# ----------------------------------------------------------------------------- sknc evaluate
def test_evaluate_on_text_folder_and_table(bert_dir, tmp_path):
    import json

    from sknc.cli import main
    from sknc.experiments import run_evaluate

    root = tmp_path / "texts"
    for i, (text, label) in enumerate(zip(CORPUS, LABELS)):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i}.txt").write_text(text)
    res = run_evaluate(bert_dir, root, n_episodes=5, out_dir=tmp_path / "out", progress=False)
    assert [r["layer"] for r in res["layers"]] == [
        "embeddings",
        "encoder.layer.0",
        "encoder.layer.1",
        "encoder.layer.2",
        "penultimate",
    ]
    assert res["config"]["max_length"] == 48 and res["data"]["n_images"] == len(CORPUS)
    assert res["few_shot"]["n_way"] == 4
    report = (tmp_path / "out" / "report.md").read_text()
    assert "tokens per text" in report and "texts per class" in report
    table = tmp_path / "t.tsv"
    table.write_text(
        "category\tsentence\n" + "".join(f"{y}\t{x}\n" for x, y in zip(CORPUS, LABELS))
    )
    rc = main(
        [
            "evaluate",
            "--model",
            bert_dir,
            "--data",
            str(table),
            "--out",
            str(tmp_path / "o2"),
            "--episodes",
            "5",
            "--layers",
            "1,-1",
            "--no-progress",
        ]
    )
    assert rc == 0
    res2 = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert [r["layer"] for r in res2["layers"]] == [
        "encoder.layer.0",
        "encoder.layer.2",
        "penultimate",
    ]
    # the table and the folder hold the same texts: same penultimate NC1
    assert np.isclose(res2["layers"][-1]["nc1"], res["layers"][-1]["nc1"])
    bad = ["evaluate", "--model", bert_dir, "--data", str(table), "--input-size", "32"]
    with pytest.raises(SystemExit) as exc:
        main(bad + ["--out", str(tmp_path / "o3"), "--no-progress"])
    assert exc.value.code == 2


def test_text_folder_and_table_errors(tmp_path):
    from sknc.datasets import load_text_files, load_text_table

    with pytest.raises(FileNotFoundError):
        load_text_files(tmp_path / "missing")
    with pytest.raises(ValueError, match="No text files"):
        load_text_files(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="Cannot decode"):
        load_text_files(tmp_path)
    table = tmp_path / "t.csv"
    table.write_text("id,body,extra\n1,hello,x\n")
    with pytest.raises(ValueError, match="Cannot tell the text and label columns"):
        load_text_table(table)
    with pytest.raises(ValueError, match="No column 'txt'"):
        load_text_table(table, text_column="txt", label_column="id")
    b = load_text_table(table, text_column="body", label_column="id")
    assert b.data == ["hello"] and b.columns == ("body", "id")
    table.write_text("label,text\nspam,\n")
    with pytest.raises(ValueError, match="Row 2 .* empty"):
        load_text_table(table)
    two = tmp_path / "two.tsv"
    two.write_text("a\tb\nx\ta long sentence here\ny\tanother long one\n")
    assert load_text_table(two).columns == ("b", "a")


def test_rank_backbones_over_text_encoders(bert_dir):
    from sknc.model_selection import rank_backbones

    candidates = {
        "bert": TextFeatures(bert_dir),
        "bert layer 1": TextFeatures(bert_dir, layers=1),
        "random": TextFeatures(bert_dir, pretrained=False, random_state=0),
    }
    res = rank_backbones(candidates, CORPUS, LABELS, random_state=0, test_size=0.5)
    assert sorted(res.ranking) == sorted(candidates)
    assert all(np.isfinite(row["nc1"]) for row in res.table)


def test_hub_id_offline_fails_fast_naming_the_reason(monkeypatch):
    """A hub id with the hub off: one clear ValueError (no retries), and huggingface_hub's
    offline switch is restored afterwards (the guard is shared with the image path)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = hf_constants.HF_HUB_OFFLINE
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set and it is not in the local cache"):
        text_mod.load_text_encoder("sknc-test/no-such-encoder-xyz", backend="transformers")
    assert hf_constants.HF_HUB_OFFLINE == before
