"""Progress bars say which step and stage they belong to."""
from __future__ import annotations

from adaptinf import progress


def test_bars_carry_the_step_and_stage():
    assert progress.desc("train") == "train"                  # outside a stage: the loop's name
    with progress.labelled(2, "train"):
        assert progress.desc("train") == "step 2 train"
        assert progress.desc("extract") == "step 2 train / extract"
        with progress.labelled(2, "prune"):
            assert progress.desc("extract") == "step 2 prune / extract"
        assert progress.desc("eval") == "step 2 train / eval"  # the outer label comes back
    assert progress.desc("eval") == "eval"


def test_the_training_bar_is_labelled(demo_quick, capsys):
    """The real loop's bar, drawn to stderr, starts with the label."""
    from adaptinf.model.encoding import Encoder
    from adaptinf.model.loading import load_base
    from adaptinf.data.records import read_records
    from adaptinf.training.loop import TrainConfig, train_model
    import torch
    torch.set_num_threads(1)
    records = read_records(str(sorted((demo_quick / "datasets").glob("*.jsonl"))[0]), "d",
                           image_root=str(demo_quick))[0][:4]
    bundle = load_base(str(demo_quick / "model"))
    with progress.labelled(3, "train"):
        train_model(bundle, Encoder(bundle, 128), records, TrainConfig(epochs=1, batch_size=4), progress=True)
    assert "step 3 train" in capsys.readouterr().err


def test_run_local_without_progress_gives_the_stages_no_bars(demo_quick, tmp_path, monkeypatch):
    """`progress=False` (compare's workers, `--no-progress`) reaches every stage's context
    (it was shadowed by the progress-label module and every stage drew its bars)."""
    import pytest

    from adaptinf.runner import collect, run_local
    from adaptinf.stages import registry

    seen: list[object] = []

    class Stop(Exception):
        pass

    def build_context(*args, progress, **kwargs):
        seen.append(progress)
        raise Stop

    monkeypatch.setattr(registry, "build_context", build_context)
    run, datasets = collect([str(demo_quick / "lifelongrun.yaml"), str(demo_quick / "datasets")])
    with pytest.raises(Stop):
        run_local(run, datasets[:1], tmp_path / "work", tracking=False, progress=False)
    assert seen == [False]
