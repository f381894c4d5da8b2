"""A plug-in study stage for mnistlab: a k-nearest-neighbour probe of every encoder stage's code,
registered through the entry point group `mnistlab.stages`. It runs in `mnistlab run` after the
encoders it reads, writes RUN/knn_probe/summary.json and adds its section to the report, with nothing
in mnistlab edited."""

from __future__ import annotations

import json

import numpy as np

from mnistlab.plugin import Section, Stage, StudyContext, Table, load, load_run, pct

FOLDER = "knn_probe"
K = 5


def run(ctx: StudyContext, resume: bool) -> None:
    out = ctx.out / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    accuracy = {}
    for name in ctx.encoders():
        trained = load_run(ctx.out / name, role="encoder")
        data = load(trained.exp.data)
        train = trained.encode(data.train.images).numpy()  # (N_train, d)
        test = trained.encode(data.test.images).numpy()  # (N_test, d)
        d2 = (test**2).sum(1)[:, None] + (train**2).sum(1)[None, :] - 2 * test @ train.T
        nearest = np.argsort(d2, axis=1)[:, :K]  # (N_test, K)
        votes = data.train.labels.numpy()[nearest]
        predicted = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
        accuracy[name] = float((predicted == data.test.labels.numpy()).mean())
    (out / "summary.json").write_text(json.dumps({"k": K, "test_accuracy": accuracy}))


def report(run, name: str) -> Section:
    sec = Section(name, "k-nearest-neighbour probe (a plug-in stage)")
    sec.missing = run.not_run(name, "k-NN probe")
    if sec.missing:
        return sec
    s = run.json(f"{FOLDER}/summary.json")
    rows = [[enc, pct(acc)] for enc, acc in s["test_accuracy"].items()]
    sec.tables.append(Table(f"{s['k']}-NN on each encoder's code", ["encoder", "test accuracy"], rows))
    return sec


STAGE = Stage(
    name="knn_probe",
    description="a k-NN probe of every encoder's code (plug-in example)",
    run=run,
    folder=lambda ctx: FOLDER,
    inputs=lambda ctx: {"k": K},
    reads=lambda ctx: tuple(ctx.encoders()),
    include=lambda ctx: bool(ctx.encoders()),
    report=report,
)
