import torch

from advrepro.data import disjoint_halves, random_targets, sample_correctly_classified


def test_sample_keeps_only_correctly_classified_and_is_seeded():
    images = torch.arange(50, dtype=torch.float).view(50, 1, 1, 1)
    labels = torch.zeros(50, dtype=torch.long)
    # "classifier": right on even-valued images, wrong on odd ones
    def classify(x):
        wrong = x.flatten(1)[:, 0].long() % 2 == 1
        logits = torch.zeros(len(x), 10)
        logits[wrong, 3] = 1
        logits[~wrong, 0] = 1
        return logits

    a = sample_correctly_classified(classify, images, labels, 20, seed=1)
    b = sample_correctly_classified(classify, images, labels, 20, seed=1)
    c = sample_correctly_classified(classify, images, labels, 20, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len(a) < 20 and len(a) > 0
    assert all(int(i) % 2 == 0 for i in a)


def test_random_targets_differ_from_labels_and_cover_classes():
    labels = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
    t = random_targets(labels, 10, seed=3)
    assert (t != labels).all()
    assert set(t.tolist()) == set(range(10))
    assert torch.equal(t, random_targets(labels, 10, seed=3))


def test_disjoint_halves_partition_the_training_set():
    a, b = disjoint_halves(1001, seed=0)
    assert len(a) == 500 and len(b) == 501
    assert not set(a.tolist()) & set(b.tolist())
    assert sorted(a.tolist() + b.tolist()) == list(range(1001))
