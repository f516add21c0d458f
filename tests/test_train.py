"""Training parts on small synthetic data: augmentation, losses, optimiser, history, model folders."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

from facelab.faces.masks import hull_mask
from facelab.models.folder import (
    BACKUPS,
    COMMIT,
    OPTIMIZER,
    STAGING,
    WEIGHTS,
    CheckpointError,
    ModelFolder,
    ModelLocked,
)  # fmt: skip
from facelab.train.augment import AugmentSpec, EpochSampler, augment, sample_generators
from facelab.train.history import MAX_BUCKETS, LossHistory
from facelab.train.losses import dssim, gaussian_blur, masked_face_loss
from facelab.train.optim import OPTIMIZERS, RMSprop


def _faces(n=4, res=32):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, res, res, generator=g) * 255).byte()
    masks = torch.zeros(n, 1, res, res, dtype=torch.uint8)
    masks[..., 8:24, 8:24] = 255
    return images, masks


def test_epoch_sampler_visits_every_face_once_per_epoch():
    s = EpochSampler(10, seed=3, side="src")
    first, second = s.indices(0, 10), s.indices(10, 10)
    assert sorted(first.tolist()) == list(range(10)) and sorted(second.tolist()) == list(range(10))
    assert first.tolist() != second.tolist()
    assert (
        s.indices(7, 6).tolist() == torch.cat([first[7:], second[:3]]).tolist()
    )  # by position, any batch size


def test_augment_is_a_pure_function_of_its_generators():
    images, masks = _faces()
    spec = AugmentSpec(random_flip=True)
    n = len(images)
    a = augment(images, masks, spec, sample_generators(1, "src", start=5, count=n), warp=True)
    b = augment(images, masks, spec, sample_generators(1, "src", start=5, count=n), warp=True)
    c = augment(images, masks, spec, sample_generators(1, "src", start=6, count=n), warp=True)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    warped, target, mask = a
    assert warped.dtype == torch.float32 and float(warped.min()) >= 0 and float(warped.max()) <= 1
    assert not torch.equal(warped, target)  # the warp moves pixels
    # Unwarped, the same draw gives exactly the same target: the repeat iteration's input.
    _, target2, _ = augment(images, masks, spec, sample_generators(1, "src", start=5, count=n), warp=False)
    assert torch.equal(target, target2)
    # A sample's draws follow it: the second half alone (as another process would make it) matches.
    half = n // 2
    gens = sample_generators(1, "src", start=5 + half, count=n - half)
    tail = augment(images[half:], masks[half:], spec, gens, warp=True)
    assert all(torch.allclose(x[half:], y, atol=1e-6) for x, y in zip(a, tail, strict=True))


def test_identity_augment_returns_the_faces():
    images, masks = _faces()
    spec = AugmentSpec(random_warp=False, rotation_deg=0, scale=0, shift=0)
    gens = sample_generators(0, start=0, count=len(images))
    warped, target, mask = augment(images, masks, spec, gens, warp=True)
    assert torch.allclose(target, images.float() / 255, atol=1e-5) and torch.equal(warped, target)
    assert torch.allclose(mask, masks.float() / 255, atol=1e-5)


def _drawn_landmarks() -> np.ndarray:
    """68 points of a plain frontal face in a 128 px image: jaw arc, brows at y=45, eyes at y=55."""
    p = np.zeros((68, 2))
    t = np.linspace(np.pi, 0, 17)
    p[:17] = np.c_[64 + 40 * np.cos(t), 50 + 50 * np.sin(t)]  # jaw: from the left temple down and up
    p[17:27] = np.c_[np.linspace(32, 96, 10), np.full(10, 45.0)]  # brows
    p[27:36] = np.c_[np.full(9, 64.0), np.linspace(50, 80, 9)]  # nose
    p[36:48] = np.c_[np.linspace(38, 90, 12), np.full(12, 55.0)]  # eyes
    p[48:68] = np.c_[np.linspace(50, 78, 20), np.full(20, 88.0)]  # mouth
    return p


def test_hull_mask_covers_the_face_and_raised_brows():
    m = hull_mask(_drawn_landmarks(), 128)
    assert m[70, 64] == 255 and m[95, 64] == 255  # face centre, chin
    assert m[5, 5] == 0 and m[120, 5] == 0
    assert m[41, 64] == 255  # above the brow line: brows are raised by half their distance to the eyes
    assert m[30, 64] == 0


def test_dssim_and_masked_loss():
    a = torch.rand(2, 3, 32, 32)
    assert torch.allclose(dssim(a, a, 3), torch.zeros(2), atol=1e-6)
    assert (dssim(a, torch.rand(2, 3, 32, 32), 3) > 0.1).all()
    loss = masked_face_loss(a.bfloat16(), torch.rand(2, 1, 32, 32).bfloat16(), a, torch.ones(2, 1, 32, 32))
    assert loss.dtype == torch.float32 and loss.shape == (2,)  # losses stay fp32 under bf16 outputs
    blurred = gaussian_blur(torch.ones(1, 1, 9, 9), 1)
    assert blurred[0, 0, 4, 4] > 0.99 and blurred[0, 0, 0, 0] < 0.6  # zero padding softens the border


def test_rmsprop_matches_its_formula_and_lr_dropout_keeps_30_percent():
    w = torch.nn.Parameter(torch.ones(1000))
    opt = RMSprop([("w", w)], lr=0.1)
    w.grad = torch.full((1000,), 2.0)
    opt.step(0)
    acc = 0.1 * 4.0
    assert torch.allclose(w.detach(), torch.full((1000,), 1 - 0.1 * 2 / (acc**0.5 + 1e-7)))
    v = torch.nn.Parameter(torch.ones(200_000))
    drop = RMSprop([("v", v)], lr=0.1, lr_dropout=0.3, seed=1)
    moved = []
    for step in range(3):
        before = v.detach().clone()
        v.grad = torch.ones_like(v)
        drop.step(step)
        moved.append((v.detach() != before).float())
    assert all(abs(float(m.mean()) - 0.3) < 0.01 for m in moved)
    assert float((moved[0] * moved[1]).mean()) == pytest.approx(0.09, abs=0.01)  # independent per step
    restored = RMSprop([("v", v)], lr=0.1)
    restored.load_state_tensors(drop.state_tensors())
    assert torch.equal(restored.acc[0], drop.acc[0])


@pytest.mark.parametrize("kind", ["rmsprop", "adabelief"])
@pytest.mark.parametrize("lr_dropout", [1.0, 0.3])
def test_multi_tensor_step_equals_the_chunked_step(kind, lr_dropout):
    """The GPU's multi-tensor update (foreach) and the CPU's chunked one give the same weights and
    state, channels_last weights included."""
    def make():
        g = torch.Generator().manual_seed(0)
        shapes = [(64, 32, 3, 3), (64,), (700_000,), (16, 8, 1, 1)]  # the third spans two CPU chunks
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
        params[0].data = params[0].data.contiguous(memory_format=torch.channels_last)
        return params, OPTIMIZERS[kind]([(f"p{i}", p) for i, p in enumerate(params)], lr=0.01,
                                        lr_dropout=lr_dropout, seed=3)  # fmt: skip

    (a, opt_a), (b, opt_b) = make(), make()
    g = torch.Generator().manual_seed(1)
    for step in range(3):
        for pa, pb in zip(a, b, strict=True):
            pa.grad = torch.randn(pa.shape, generator=g)
            pb.grad = pa.grad.clone()
        a[1].grad = b[1].grad = None  # a parameter without a gradient is left alone
        opt_a.step(step, foreach=False)
        opt_b.step(step, foreach=True)
    for pa, pb in zip(a, b, strict=True):
        assert torch.allclose(pa, pb, rtol=1e-6, atol=1e-7)
    for name, t in opt_a.state_tensors().items():
        assert torch.allclose(t, opt_b.state_tensors()[name], rtol=1e-6, atol=1e-9)
    assert not torch.equal(a[0], make()[0][0])


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_the_step_is_right_after_the_weights_change_memory_layout(kind):
    """`--precision auto` may put the model in channels_last (or take it out) after the optimiser
    was made: the state must still belong to its own weight element, as without the change."""
    def make(layout):
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((64, 32, 3, 3), (8, 16, 5, 5))]
        opt = OPTIMIZERS[kind]([(f"p{i}", p) for i, p in enumerate(params)], lr=0.01, seed=3)
        for p in params:
            p.data = p.data.contiguous(memory_format=layout)
        return params, opt

    (a, opt_a), (b, opt_b) = make(torch.contiguous_format), make(torch.channels_last)
    g = torch.Generator().manual_seed(1)
    for step in range(3):
        for pa, pb in zip(a, b, strict=True):
            pa.grad = torch.randn(pa.shape, generator=g)
            pb.grad = pa.grad.contiguous(memory_format=torch.channels_last)
        opt_a.step(step)
        opt_b.step(step)
    for pa, pb in zip(a, b, strict=True):
        assert torch.allclose(pa, pb, rtol=1e-6, atol=1e-7)
    for name, t in opt_a.state_tensors().items():
        assert torch.allclose(t, opt_b.state_tensors()[name], rtol=1e-6, atol=1e-9), name


def test_loss_history_stays_small_and_round_trips():
    h = LossHistory(2)
    for i in range(1, 3 * MAX_BUCKETS + 6):
        h.add(i, [1.0 / i, 2.0])
    assert len(h.buckets) < MAX_BUCKETS and h.width == 4
    again = LossHistory.from_json(json.loads(json.dumps(h.to_json())))
    assert again.points() == h.points()
    assert sum(1 for _ in again.buckets) * again.width + again.pending_count == 3 * MAX_BUCKETS + 5


# ------------------------------------------------------------------------------ model folders


def _save(folder: ModelFolder, value: float, iteration: int) -> None:
    folder.save({"model": "x"}, {"w": torch.full((4,), value)}, {"acc/w": torch.zeros(4)},
                {"iteration": iteration}, "summary\n")  # fmt: skip


def test_save_and_load(tmp_path):
    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    assert folder.name == "m" and folder.class_name == "Quick96" and not folder.exists()
    _save(folder, 1.0, 10)
    ckpt = folder.load()
    assert ckpt.state["iteration"] == 10 and torch.equal(ckpt.weights["w"], torch.ones(4))
    assert set(ckpt.state["digests"]) == {"model.safetensors", "optimizer.safetensors"}
    assert oct(os.stat(folder.path / WEIGHTS).st_mode & 0o777) != "0o600"


def test_interrupted_saves_give_old_or_new_never_a_mix(tmp_path):
    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    _save(folder, 1.0, 10)
    # A crash before the commit point leaves .saving/: it is dropped, the old save stays.
    (folder.path / STAGING).mkdir()
    (folder.path / STAGING / WEIGHTS).write_bytes(b"half written")
    assert folder.load().state["iteration"] == 10  # readers ignore .saving/
    folder.recover()
    assert not (folder.path / STAGING).exists()
    # A crash after it, with some files already moved: readers see the new save; recovery finishes it.
    _save(ModelFolder.of(tmp_path / "other", "m", "Quick96"), 2.0, 20)
    os.rename(tmp_path / "other" / "m_Quick96", folder.path / COMMIT)
    os.replace(folder.path / COMMIT / WEIGHTS, folder.path / WEIGHTS)
    ckpt = folder.load()
    assert ckpt.state["iteration"] == 20 and torch.equal(ckpt.weights["w"], torch.full((4,), 2.0))
    folder.recover()
    assert not (folder.path / COMMIT).exists() and folder.load().state["iteration"] == 20


def test_damaged_and_missing_files_are_named(tmp_path):
    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    _save(folder, 1.0, 10)
    data = bytearray((folder.path / WEIGHTS).read_bytes())
    data[-3] ^= 0xFF
    (folder.path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors is damaged"):
        folder.load()
    (folder.path / "state.json").unlink()
    with pytest.raises(CheckpointError, match="state.json is missing"):
        folder.load()


def test_lock_refuses_a_second_trainer_and_clears_a_stale_one(tmp_path):
    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    with folder.lock() as note:
        assert note is None and folder.is_locked()
        with pytest.raises(ModelLocked, match=f"process {os.getpid()}"), folder.lock():
            pass
    assert not folder.is_locked()
    (folder.path / ".lock").write_text("process 999999 since 2026-01-01 00:00:00")  # its holder died
    with folder.lock() as note:
        assert note == "cleared a stale lock left by process 999999 since 2026-01-01 00:00:00"


def test_a_trainer_starting_while_the_ui_polls_the_lock_is_not_refused(tmp_path):
    import subprocess
    import sys

    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    folder.path.mkdir(parents=True)
    (folder.path / ".lock").touch()
    poll = (  # what `facelab ui` does for every model every 2 s, here without pause
        "import sys\nfrom facelab.models.folder import ModelFolder\n"
        f"f = ModelFolder({str(folder.path)!r})\nprint(flush=True)\n"
        "while True: f.is_locked()\n"
    )
    poller = subprocess.Popen([sys.executable, "-c", poll], stdout=subprocess.PIPE, text=True)
    taken = 0
    try:
        poller.stdout.readline()
        for _ in range(1000):
            with folder.lock():  # raises ModelLocked when a probe makes it give up
                taken += 1
        assert poller.poll() is None, "the poller stopped: the race was not exercised"
    finally:
        poller.kill()
        poller.wait()
    assert taken == 1000


def test_backups_rotate_newest_first_and_restore(tmp_path):
    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    for it in (1, 2, 3):
        _save(folder, float(it), it)
        folder.backup()
    assert [s.name for s, _ in folder.backups()] == ["01", "02", "03"]
    assert [st["iteration"] for _, st in folder.backups()] == [3, 2, 1]
    slot = folder.path / BACKUPS / "03"
    folder.restore(slot)
    assert folder.load().state["iteration"] == 1
    assert folder.backups()[0][1]["iteration"] == 3  # the backups themselves are untouched


def test_restore_keeps_the_checkpoint_it_replaces(tmp_path):
    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    _save(folder, 2.0, 2)
    folder.backup()
    _save(folder, 4.0, 4)
    kept = folder.restore(folder.path / BACKUPS / "01")
    assert folder.load().state["iteration"] == 2
    assert kept.parent == folder.path / BACKUPS
    assert kept.name.startswith("replaced-") and kept.name.endswith("-4")
    assert [st["iteration"] for _, st in folder.backups()] == [2, 4]  # rotated slots first, then replaced
    assert folder.restore(kept) is not None  # and back again
    assert torch.equal(folder.load().weights["w"], torch.full((4,), 4.0))


def test_models_restore_asks_before_replacing_a_newer_checkpoint(tmp_path):
    from tests.conftest import run_cli

    ws = tmp_path / "ws"
    folder = ModelFolder.of(ws / "model", "m", "Quick96")
    _save(folder, 2.0, 2)
    folder.backup()
    _save(folder, 4.0, 4)
    refused = run_cli("models", "restore", "m", "-w", ws)
    assert refused.returncode == 2 and "iteration 4" in refused.stderr and "add --yes" in refused.stderr
    assert folder.load().state["iteration"] == 4
    done = run_cli("models", "restore", "m", "-w", ws, "--yes")
    assert done.returncode == 0, done.stderr
    assert folder.load().state["iteration"] == 2
    kept = folder.backups()[-1][0]
    assert kept.name in done.stdout
    back = run_cli("models", "restore", "m", "-w", ws, "--yes", "--backup", kept.name)
    assert back.returncode == 0, back.stderr
    assert folder.load().state["iteration"] == 4
    (folder.path / WEIGHTS).write_bytes(b"damaged")  # a damaged checkpoint is what restore is for
    assert folder.problem() == f"{folder.path / WEIGHTS} is damaged (its checksum does not match state.json)"
    assert run_cli("models", "restore", "m", "-w", ws).returncode == 0  # no --yes needed
    assert folder.problem() is None and folder.load().state["iteration"] == 2


def test_a_reader_racing_saves_sees_the_old_or_the_new_save_never_a_mix(tmp_path):
    """A review found 63 of 182 loads beside a saving loop refused a healthy model as damaged."""
    import subprocess
    import sys

    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    folder.save({}, {"w": torch.zeros(1 << 19)}, {"o": torch.zeros(1 << 19)}, {"iteration": 0}, "")
    saver = (  # a trainer saving as fast as it can: every weight equals the iteration
        "import sys, torch\nfrom facelab.models.folder import ModelFolder\n"
        f"f = ModelFolder({str(folder.path)!r})\nprint(flush=True)\n"
        "for i in range(1, 10**6):\n"
        "    f.save({}, {'w': torch.full((1 << 19,), float(i))}, {'o': torch.full((1 << 19,), float(i))},"
        " {'iteration': i}, '')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", saver], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        loads, seen = 0, set()
        deadline = time.time() + 8
        while time.time() < deadline:
            ckpt = folder.load()  # raises on a mix
            it = ckpt.state["iteration"]
            assert ckpt.weights["w"][0].item() == it and ckpt.optimizer["o"][-1].item() == it
            loads, seen = loads + 1, seen | {it}
        assert proc.poll() is None, "the saver stopped"
    finally:
        proc.kill()
        proc.wait()
    assert loads >= 20 and len(seen) >= 5, (loads, len(seen))


def test_weights_only_load_does_not_read_the_optimizer(tmp_path):
    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    _save(folder, 1.0, 10)
    (folder.path / OPTIMIZER).write_bytes(b"damaged")
    assert torch.equal(folder.load(optimizer=False).weights["w"], torch.ones(4))  # merge still works
    with pytest.raises(CheckpointError, match="optimizer.safetensors is damaged"):
        folder.load()


def test_a_bad_config_json_is_a_clear_error_before_anything_is_allocated(tmp_path):
    from facelab.models.folder import load_network

    folder = ModelFolder.of(tmp_path, "m", "Quick96")
    for config, words in (({"model": "x"}, "config.json has no architecture"),
                          ({"architecture": {"name": "quick96", "resolution": 100000}},
                           "resolution must be from 16 to 640, not 100000"),
                          ({"architecture": {"name": "saehd", "resolution": 4096}}, "from 64 to 640"),
                          ({"architecture": {"name": "vae9"}}, "unknown model 'vae9'"),
                          ({"architecture": {"name": "quick96", "colour": 3}},
                           "no option colour")):  # fmt: skip
        folder.save(config, {"w": torch.zeros(1)}, {}, {"iteration": 1}, "")
        with pytest.raises(CheckpointError, match=words):
            load_network(folder)
    tiny = {"name": "quick96", "resolution": 32, "ae_dims": 16, "e_dims": 8, "d_dims": 8, "d_mask_dims": 8}
    folder.save({"architecture": tiny}, {"w": torch.zeros(1)}, {}, {"iteration": 1}, "")
    with pytest.raises(CheckpointError, match="does not match its config.json .missing e.g."):
        load_network(folder)


def test_out_of_memory_is_recognised_however_the_allocator_words_it():
    from facelab.device import is_oom

    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert is_oom(RuntimeError("could not create a primitive"))  # oneDNN's word for a failed workspace
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_oom(ValueError("out of memory"))
