import torch
import torch.nn.functional as F

from dstbench.data import Augment, TensorImages
from dstbench.data.loader import crop_and_flip

CPU = torch.device("cpu")


def _images(n=10, c=3, h=8, w=6):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_crop_and_flip_matches_per_sample_reference():
    images = _images()
    pad = 2
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 2 * pad + 1, (len(images), 2), generator=g)
    flips = torch.rand(len(images), generator=g) < 0.5
    out = crop_and_flip(images, pad, offsets, flips)
    padded = F.pad(images, (pad,) * 4)
    for i in range(len(images)):
        top, left = offsets[i].tolist()
        expected = padded[i, :, top : top + 8, left : left + 6]
        if flips[i]:
            expected = expected.flip(-1)
        assert torch.equal(out[i], expected)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_crop_without_shift_or_flip_is_identity():
    images = _images()
    n = len(images)
    out = crop_and_flip(images, 3, torch.full((n, 2), 3), torch.zeros(n, dtype=torch.bool))
    assert torch.equal(out, images)


def test_training_epoch_visits_every_sample_once_and_is_seeded():
    data = TensorImages(_images(10), torch.arange(10), augment=Augment(crop_padding=2, hflip=True))

    def epoch(seed):
        batches = list(data.batches(4, CPU, train=True, generator=torch.Generator().manual_seed(seed)))
        return torch.cat([b.ids for b in batches]), torch.cat([b.images for b in batches])

    ids, images = epoch(0)
    assert sorted(ids.tolist()) == list(range(10))
    ids_again, images_again = epoch(0)
    assert torch.equal(ids, ids_again) and torch.equal(images, images_again)
    assert not torch.equal(epoch(1)[0], ids)


def test_labels_follow_their_images():
    images = _images(9)
    data = TensorImages(images, torch.arange(9) * 10)
    for batch in data.batches(4, CPU, train=True, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(batch.labels, batch.ids * 10)


def test_single_sample_training_batch_is_dropped_but_not_in_evaluation():
    data = TensorImages(_images(9), torch.zeros(9))
    assert data.num_batches(4, train=True) == 2
    assert data.num_batches(4, train=False) == 3
    assert sum(len(b.ids) for b in data.batches(4, CPU, train=False)) == 9


def test_subset_keeps_sample_ids():
    data = TensorImages(_images(10), torch.arange(10))
    sub = data.subset(torch.tensor([7, 2]))
    (batch,) = list(sub.batches(8, CPU, train=False))
    assert batch.ids.tolist() == [7, 2]
    assert torch.equal(batch.images, data.images[[7, 2]])


def test_clips_get_one_crop_and_flip_for_all_frames():
    clips = torch.randint(0, 256, (4, 3, 5, 8, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    offsets = torch.tensor([[0, 4], [2, 2], [4, 0], [1, 3]])
    flips = torch.tensor([True, False, True, False])
    out = crop_and_flip(clips, 2, offsets, flips)
    assert out.shape == clips.shape
    for t in range(5):
        assert torch.equal(out[:, :, t], crop_and_flip(clips[:, :, t], 2, offsets, flips))
    data = TensorImages(clips, torch.arange(4), augment=Augment(crop_padding=2, hflip=True))
    batch = next(data.batches(4, CPU, train=True, generator=torch.Generator().manual_seed(0)))
    assert batch.images.shape == (4, 3, 5, 8, 6)
