import pytest
import torch
import torch.nn.functional as F
from conftest import HostCopies

from dstbench.data import Augment, StreamImages, TensorImages
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


def _views(n=6, k=3):
    """Clips (N, K, 1, 2, 4, 4) whose every pixel is 10 * sample + view, so a batch tells which view it got."""
    value = 10 * torch.arange(n)[:, None] + torch.arange(k)
    return value[:, :, None, None, None, None].expand(n, k, 1, 2, 4, 4).to(torch.uint8).contiguous()


def _epoch_views(data, seed):
    batches = list(data.batches(4, CPU, train=True, generator=torch.Generator().manual_seed(seed)))
    ids = torch.cat([b.ids for b in batches])
    values = torch.cat([b.images[:, 0, 0, 1, 1] for b in batches]).long()  # a pixel the crop keeps
    assert torch.equal(values // 10, ids)  # each sample brings a view of its own clips
    return ids, values % 10


def test_training_views_one_per_sample_every_view_used_and_seeded():
    data = TensorImages(_views(), torch.arange(6), augment=Augment(crop_padding=1))
    assert data.num_views == 3 and len(data) == 6
    ids, views = _epoch_views(data, 0)
    assert sorted(ids.tolist()) == list(range(6))  # an epoch is still N samples
    assert next(data.batches(4, CPU, train=True, generator=torch.Generator())).images.shape == (4, 1, 2, 4, 4)
    ids_again, views_again = _epoch_views(data, 0)
    assert torch.equal(ids, ids_again) and torch.equal(views, views_again)
    seen = set()
    for seed in range(1, 21):
        ids, views = _epoch_views(data, seed)
        seen |= set(zip(ids.tolist(), views.tolist(), strict=True))
    assert seen == {(i, k) for i in range(6) for k in range(3)}


def test_evaluating_views_reads_the_middle_view():
    for k, middle in ((3, 1), (4, 2)):
        data = TensorImages(_views(5, k), torch.arange(5))
        (batch,) = list(data.batches(8, CPU, train=False))
        assert batch.images.shape == (5, 1, 2, 4, 4)
        assert batch.images[:, 0, 0, 0, 0].tolist() == [10 * i + middle for i in range(5)]


def test_views_subset_keeps_its_views_and_ids():
    data = TensorImages(_views(), torch.arange(6)).subset(torch.tensor([4, 1]))
    assert data.num_views == 3 and data.ids.tolist() == [4, 1]
    _, views = _epoch_views(data, 0)
    assert set(views.tolist()) <= {0, 1, 2}


def test_single_clip_training_draws_no_view_numbers():
    clips = torch.randint(0, 256, (6, 1, 2, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    data = TensorImages(clips, torch.arange(6), augment=Augment(crop_padding=1, hflip=True))
    generator = torch.Generator().manual_seed(0)
    list(data.batches(4, CPU, train=True, generator=generator))
    expected = torch.Generator().manual_seed(0)
    torch.randperm(6, generator=expected)  # order, crop offsets, flips: the draws of an epoch without views
    torch.randint(0, 3, (6, 2), generator=expected)
    torch.rand(6, generator=expected)
    assert torch.equal(generator.get_state(), expected.get_state())  # runs of image data replay as before


def test_images_of_other_ranks_are_refused():
    with pytest.raises(ValueError, match="views of clips"):
        TensorImages(torch.zeros(2, 1, 1, 1, 1, 1, 1, dtype=torch.uint8), torch.zeros(2))


def test_training_batches_match_a_per_sample_reference_and_their_draws_are_uniform():
    """Sample i of an epoch is the order's i-th image with the i-th crop offsets and flip, drawn from the generator
    in the documented sequence; offsets are uniform on 0..2p on both axes and a flip has probability 1/2."""
    n, pad = 2000, 2
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    data = TensorImages(images, torch.arange(n), augment=Augment(crop_padding=pad, hflip=True))
    batches = list(data.batches(300, CPU, train=True, generator=torch.Generator().manual_seed(0)))
    draws = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=draws)
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=draws)
    flips = torch.rand(n, generator=draws) < 0.5
    assert torch.equal(torch.cat([b.ids for b in batches]), order)
    padded = F.pad(images, (pad,) * 4)
    out = torch.cat([b.images for b in batches])
    for i in range(n):
        top, left = offsets[i].tolist()
        expected = padded[order[i], :, top : top + 4, left : left + 4]
        assert torch.equal(out[i], expected.flip(-1) if flips[i] else expected)
    for axis in range(2):
        counts = torch.bincount(offsets[:, axis], minlength=2 * pad + 1)
        assert len(counts) == 2 * pad + 1 and ((counts - n / 5).abs() < 4 * (n * 0.2 * 0.8) ** 0.5).all()
    assert abs(flips.float().mean() - 0.5) < 4 * (0.25 / n) ** 0.5


def test_epochs_reshuffle_and_the_last_partial_batch_is_kept_unless_it_is_one_sample():
    generator = torch.Generator().manual_seed(0)
    data = TensorImages(_images(70), torch.arange(70))
    first = list(data.batches(16, CPU, train=True, generator=generator))
    second = list(data.batches(16, CPU, train=True, generator=generator))
    assert [len(b.ids) for b in first] == [16, 16, 16, 16, 6] and len(first) == data.num_batches(16, train=True)
    assert not torch.equal(torch.cat([b.ids for b in first]), torch.cat([b.ids for b in second]))
    odd = TensorImages(_images(65), torch.arange(65))
    assert [len(b.ids) for b in odd.batches(16, CPU, train=True, generator=generator)] == [16] * 4
    assert odd.num_batches(16, train=True) == 4


def test_shards_of_a_batch_are_the_single_process_batch_split_by_rank():
    data = TensorImages(_images(70), torch.arange(70), augment=Augment(crop_padding=2, hflip=True))

    def epoch(shard):
        return list(data.batches(16, CPU, train=True, generator=torch.Generator().manual_seed(3), shard=shard))

    single, ranks = epoch((0, 1)), [epoch((r, 2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == data.num_batches(16, train=True, processes=2) == 4  # full ones only
    for b, (zero, one) in enumerate(zip(*ranks, strict=True)):
        assert torch.equal(torch.cat([zero.ids, one.ids]), single[b].ids)
        assert torch.equal(torch.cat([zero.images, one.images]), single[b].images)


def test_streamed_shards_hold_the_single_process_batches():
    """Streamed data (ImageNet) under torchrun: every global batch holds the samples, augmented alike, that one
    process's batch holds, whatever the order within it."""
    data = StreamImages(_RandomlyAugmented(), torch.arange(12), workers=0)

    def epoch(shard):
        return list(data.batches(4, CPU, train=True, generator=torch.Generator().manual_seed(3), shard=shard))

    single, ranks = epoch((0, 1)), [epoch((r, 2)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 3
    for b, (zero, one) in enumerate(zip(*ranks, strict=True)):
        ids, images = torch.cat([zero.ids, one.ids]), torch.cat([zero.images, one.images])
        assert torch.equal(ids.sort().values, single[b].ids.sort().values)
        assert torch.equal(images[ids.argsort()], single[b].images[single[b].ids.argsort()])
    assert not torch.equal(torch.cat([b.ids for b in single]), torch.arange(12))  # shuffled
    evaluation = list(data.batches(5, CPU, train=False))
    assert torch.equal(torch.cat([b.ids for b in evaluation]), torch.arange(12))  # in order, all of them


def test_device_resident_data_copies_only_the_epochs_random_numbers():
    """On an accelerator (here the meta device, which takes the same path) an epoch copies its order, crop offsets
    and flips to the device once, and nothing per batch."""
    meta = torch.device("meta")
    data = TensorImages(
        torch.empty(50, 3, 8, 8, dtype=torch.uint8, device=meta),
        torch.empty(50, dtype=torch.int64, device=meta),
        augment=Augment(crop_padding=2, hflip=True),
    )
    with HostCopies() as copies:
        batches = list(data.batches(8, meta, train=True, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == 7 and batches[0].images.shape == (8, 3, 8, 8)
    assert len(copies.copies) == 3, copies.copies


class _RandomlyAugmented(torch.utils.data.Dataset):
    """Item i: a 'crop' drawn from torch's generator, as torchvision's random transforms draw theirs."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.randint(0, 256, (1, 2, 2), dtype=torch.uint8), i


def _streamed_epoch(workers, generator):
    data = StreamImages(_RandomlyAugmented(), torch.arange(12), workers=workers)
    batches = list(data.batches(4, CPU, train=True, generator=generator))
    ids, images = torch.cat([b.ids for b in batches]), torch.cat([b.images for b in batches])
    return images[ids.argsort()]


def test_streamed_augmentation_does_not_depend_on_the_number_of_workers():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    generator = torch.Generator().manual_seed(0)
    in_process = _streamed_epoch(0, generator)
    assert torch.equal(torch.get_rng_state(), before)  # the main process's generator (dropout's) is left alone
    assert torch.equal(_streamed_epoch(2, torch.Generator().manual_seed(0)), in_process)
    assert not torch.equal(_streamed_epoch(0, generator), in_process)  # the next epoch augments anew
