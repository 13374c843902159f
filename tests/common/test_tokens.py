import numpy as np

from common.tokens import TokenizedReports, eval_loader, make_collate, tokenize


class CountingTokenizer:
    """Wraps a real tokenizer and counts calls, to see the cache at work."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __len__(self):
        return len(self.inner)

    def get_vocab(self):
        return self.inner.get_vocab()


def test_tokenize_once_then_from_cache(tiny_classifier):
    tok = CountingTokenizer(tiny_classifier.tokenizer)
    texts = ["No pleural effusion.", "Small left pleural effusion, unchanged from the prior study."]
    first = tokenize(texts, tok, max_length=32, fingerprint="abc123")
    second = tokenize(texts, tok, max_length=32, fingerprint="abc123")
    assert tok.calls == 1 and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    tokenize(texts, tok, max_length=8, fingerprint="abc123")  # another length is another entry
    assert tok.calls == 2


def test_batches_are_padded_to_their_own_longest_report():
    ids = [np.arange(1, n + 1) for n in (3, 9, 4, 2)]
    data = TokenizedReports(ids, np.zeros((4, 2)))
    input_ids, mask, labels = make_collate(0)([data[0], data[3]])
    assert input_ids.shape == (2, 3) and mask.sum().item() == 5 and labels.shape == (2, 2)
    batches = list(eval_loader(data, batch_size=2, pad_id=0))
    assert [b[0].shape[1] for b in batches] == [3, 9]  # length-sorted: (2, 3) then (4, 9)
