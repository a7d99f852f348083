"""Finding the LifelongRun and its InstructionDatasets among YAML files, in step order."""
from __future__ import annotations

from pathlib import Path

from adaptinf.spec import Resource, SpecError, load_resources


def collect(paths: list[str | Path]) -> tuple[Resource, list[Resource]]:
    """The run and its datasets from files and/or folders (a demo-data folder: its
    `lifelongrun.yaml` and `datasets/*.yaml`). Datasets are ordered by `spec.order`, then by
    their position in the arguments (file names sort within a folder)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*.yaml")) + sorted((p / "datasets").glob("*.yaml"))
        elif p.is_file():
            files.append(p)
        else:
            raise SpecError(f"{p}: no such file or directory")
    resources = [r for f in files for r in load_resources(f)]
    runs = [r for r in resources if r.kind == "LifelongRun"]
    if len(runs) != 1:
        raise SpecError(f"expected exactly one LifelongRun among {[str(f) for f in files]}, found {len(runs)}")
    run = runs[0]
    datasets = [r for r in resources if r.kind == "InstructionDataset"]
    strangers = [d.name for d in datasets if d.spec.run != run.name]
    if strangers:
        raise SpecError(f"InstructionDataset(s) {strangers} name another run than {run.name!r} (spec.run)")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise SpecError(f"InstructionDataset names repeat: {names}")
    if not datasets:
        raise SpecError(f"no InstructionDataset for run {run.name!r}")
    order = {id(d): i for i, d in enumerate(datasets)}
    datasets.sort(key=lambda d: (d.spec.order if d.spec.order is not None else 1 << 30, order[id(d)]))
    return run, datasets
