"""A tiny offline BERT (random weights) and WordPiece tokenizer for the text tests."""

import os

CORPUS = [
    "the cat sat on the mat",
    "a dog chased the ball in the park",
    "stocks fell sharply on monday morning",
    "the market rallied after the report",
    "rain is expected over the weekend",
    "sunny skies and warm weather today",
    "the striker scored twice in the final",
    "the team lost the match at home",
] * 3


def make_tiny_bert(path, *, layers=3, hidden=32, seed=0, sentence_transformers=False):
    """Save a random-init BERT and a locally trained WordPiece tokenizer to ``path``.

    With ``sentence_transformers=True`` the folder is a sentence-transformers
    model (Transformer -> mean Pooling -> Normalize).
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    os.makedirs(path, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=120, special_tokens=special)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=48,
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    if not sentence_transformers:
        model.save_pretrained(path)
        fast.save_pretrained(path)
        return path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    raw = os.path.join(path, "_raw")
    model.save_pretrained(raw)
    fast.save_pretrained(raw)
    first = Transformer(raw, max_seq_length=40)
    st = SentenceTransformer(modules=[first, Pooling(hidden, "mean"), Normalize()], device="cpu")
    st.save(path)
    return path
