"""Write the skeletons of the ablation notebooks 08-12 (then execute them with
``scripts/execute_notebooks.py``). The notebooks share one structure: the variants and their
definitions, the run-mode setting, the launch plan, the run, the table beside the paper's
numbers, a figure, what the mini run shows, and an exercise.

    .venv/bin/python scripts/make_ablation_notebooks.py && \\
    .venv/bin/python scripts/execute_notebooks.py notebooks/0[89]_*.ipynb notebooks/1*.ipynb
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

MODES_MD = """## Two modes, one setting

`RUN_MODE` below is the only thing to change:

* `"cpu-mini"` (default, what CI runs): the embedded benchmark, the offline ImageNet
  EfficientNet-Lite0 backbone, fold 0, 96x96 images, 4 x 75 Adam steps (lr 1e-3, batch 8) per
  variant, 100 fixed test episodes per K. A few minutes on two CPU cores. It is a **mini
  reproduction**: a different backbone, data and budget than the paper, so only the *ordering*
  of the variants can be compared with the paper, and even that is a finding, not a given.
* `"gpu"`: the paper's protocol on PASCAL-5i (set `DATAPATH` to the folder holding
  `VOC2012/`): all four folds, the paper's backbone for this table, 400x400, a total batch of 20.
  Each training is launched as `torchrun --nproc_per_node=<all GPUs> -m hsnet_lite.train ...`,
  resumes from its `last.pt` when re-run, and every evaluation is appended to
  `results/gpu/table_<name>.json`, so an interrupted reproduction continues where it stopped.
* `"gpu-embedded"`: the embedded benchmark at a larger scale (all folds, 256x256, 6,000 steps per
  variant) for a lent GPU machine; its results file, when present, becomes a third column.

Both modes run the same code: `hsnet_lite.ablations.plan` builds the training commands,
`hsnet_lite.trainer.train` trains (in-process for the mini mode, through `torchrun` otherwise)
and `hsnet_lite.ablations.score_predictions` evaluates with the paper's protocol."""

SETUP = """%config InlineBackend.figure_formats = ["png"]
import matplotlib.pyplot as plt
import torch

from hsnet_lite import HSNet, ablations
from hsnet_lite.teaching import check_answer, save_figure

torch.set_num_threads(2)  # fixed thread count: CPU training is then bit-for-bit repeatable
plt.rcParams["figure.dpi"] = 72

RUN_MODE = "cpu-mini"   # "cpu-mini" | "gpu" (paper protocol, PASCAL-5i) | "gpu-embedded"
DATAPATH = None         # for "gpu": the folder holding VOC2012/{JPEGImages,SegmentationClassAug}
TABLE = "{table}"
"""

PLAN_MD = """## The launch plan

One training per variant and fold. In GPU mode these are the exact commands the notebook runs
(shown here for a machine with 4 GPUs, without running anything):"""

PLAN = """print(ablations.format_plan(ablations.plan(TABLE, "gpu", n_gpus=4, datapath="~/datasets")))"""

RUN_MD = """## Run

Variants already trained (a `results.json` in their run folder under `runs/ablations/`) are not
trained again: notebooks 08-12 share the `all layers` model. In the mini mode every variant is
re-evaluated, so the table below is always what this code computes now. The cells that print
trained numbers carry `# NBVAL_IGNORE_OUTPUT`: a training run follows the floating-point kernels of
the CPU it runs on, so the regression test compares everything else in these notebooks but not those
numbers."""

RUN = """# NBVAL_IGNORE_OUTPUT
# (trained numbers follow the CPU's floating-point kernels)
records = ablations.run_table(TABLE, RUN_MODE, DATAPATH, reuse_results=RUN_MODE != "cpu-mini")
print(f"{len(records)} evaluations in results/{RUN_MODE}/table_{TABLE}.json")"""

TABLE_MD = """## The table beside the paper's

Measured columns are means over the folds that were run (the mini mode runs fold 0 only); the
paper's column is the mean over the four PASCAL-5i folds. A column shows `-` until its mode has
been run; the difference to the paper is shown for the paper-protocol GPU column."""

TABLE_CELL = """# NBVAL_IGNORE_OUTPUT
# (trained numbers follow the CPU's floating-point kernels)
columns = {{
    "CPU mini": records if RUN_MODE == "cpu-mini" else ablations.load_results(TABLE, "cpu-mini"),
    "GPU, embedded": ablations.load_results(TABLE, "gpu-embedded"),
    "GPU (paper protocol)": ablations.load_results(TABLE, "gpu"),
}}
print(ablations.format_comparison(TABLE, columns, metrics={metrics}))
for title, recs in columns.items():
    if recs and title != "CPU mini":
        print(f"{{title}}: run on {{recs[0]['machine']}}, {{sum(r['train_seconds'] for r in recs) / 3600:.1f}} GPU-hours of training")"""

FIGURE = """fig = ablations.comparison_figure(TABLE, columns, metric="{metric}", title="{title}")
print(save_figure(fig, "table_{table}.png"))"""


def notebook(number: str, slug: str, table: str, intro: str, findings_code: str, findings_md: str,
             exercise_md: str, exercise_code: str, metrics=("miou",), title: str = "") -> None:
    cells = [
        new_markdown_cell(intro),
        new_code_cell(SETUP.replace("{table}", table)),
        new_markdown_cell(MODES_MD),
        new_markdown_cell(PLAN_MD),
        new_code_cell(PLAN),
        new_markdown_cell(RUN_MD),
        new_code_cell(RUN),
        new_markdown_cell(TABLE_MD),
        new_code_cell(TABLE_CELL.format(metrics=repr(tuple(metrics)))),
        new_code_cell(FIGURE.format(metric=metrics[0], title=title or f"Table {table}", table=table)),
        new_markdown_cell(findings_md),
        new_code_cell("# NBVAL_IGNORE_OUTPUT\n# (trained numbers follow the CPU's floating-point kernels)\n"
                      + findings_code),
        new_markdown_cell(exercise_md),
        new_code_cell(exercise_code),
    ]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)",
                                                            "language": "python", "name": "python3"}})
    nbformat.write(nb, NOTEBOOKS / f"{number}_{slug}.ipynb")


ORDER_CODE = """for k in {shots}:
    order = ablations.ordering(records, k)
    paper_order = sorted(order, key=lambda v: -ablations.paper_value(TABLE, v, k))
    verdict = "same as" if order == paper_order else "differs from"
    print(f"{{k}}-shot: measured {{' > '.join(order)}}; paper {{' > '.join(paper_order)}} -> {{verdict}} the paper")"""


def main() -> None:
    notebook(
        "08", "table_s1_kshot", "S1",
        """# 08 · Table S1: more support images (K = 1, 5, 10)

**After this notebook you will understand** how HSNet uses $K$ supports without being trained for
them: one 1-shot model, one prediction per support, and the paper's vote (notebook 06, FACTS.md):
sum the $K$ binary masks, divide by the largest vote in the image (at least 1), keep pixels with at
least half of it. Table S1 (ResNet50) reports 64.0 / 69.5 / 70.6 mIoU on PASCAL-5i for
$K$ = 1 / 5 / 10: more supports help, with diminishing returns.""",
        """means = ablations.summarize(records)
gains = [round(means[("all", k)] - means[("all", 1)], 1) for k in (5, 10)]
print(f"mini: K=5 adds {gains[0]:+.1f} and K=10 adds {gains[1]:+.1f} mIoU over 1-shot (paper: +5.5 and +6.6)")""",
        """## What the mini run shows

The vote can only help where the 1-shot predictions of different supports disagree: pixels found by
at least half of the best-supported prediction survive, isolated false positives of single supports
do not. The line below compares the gains measured here with the paper's.""",
        """## Exercise

With the vote, which pixels of a 3-shot episode are foreground if the three 1-shot predictions mark
pixel A in all three masks, pixel B in two, and pixel C in one? Answer with a list of pixel names.""",
        """answer = None  # e.g. ["A"]
check_answer("08-vote-pixels", answer)""",
        title="Table S1: K-shot (1-shot-trained model)")

    notebook(
        "09", "table_s2_layers", "S2",
        r"""# 09 · Table S2: which layers? $C_p$ against $C_p^{deep}$ and $C_p^{shallow}$

**After this notebook you will understand** why HSNet correlates *every* intermediate layer of a
pyramid level instead of one.

Definitions (main paper Sec. 5.2 and Fig. 6; supplementary Table S2; FACTS.md): for pyramid level
$p$ with layers $\mathcal{L}_p$ (e.g. ResNet101: $|\mathcal{L}_1| = 4$, $|\mathcal{L}_2| = 23$,
$|\mathcal{L}_3| = 3$),

* $\mathbf{C}_p$ (the method) stacks the correlations of **all** layers of $\mathcal{L}_p$;
* $\mathbf{C}_p^{deep}$ keeps **one** correlation per level, from its **deepest** layer (the
  last block of the stage, the usual "one feature per stage" choice);
* $\mathbf{C}_p^{shallow}$ keeps one per level, from its **shallowest** layer.

The squeezing blocks are the same; only their first layer's input channels change (`layers=` in
`HSNet`, `--layers` in `python -m hsnet_lite.train`). Paper (ResNet101, PASCAL-5i, 1-shot / 5-shot):
shallow 59.1 / 65.7, deep 61.7 / 67.5, all 66.2 / 70.4.""",
        ORDER_CODE.format(shots="(1, 5)"),
        """## What the mini run shows

The lines below state whether the measured ordering of the three variants is the paper's. At mini
scale (EfficientNet-Lite0 has only 2, 6 and 5 layers per level, and each model saw 2,400 training
episodes) the differences are small and an ordering that differs is a finding about this scale, not
a contradiction of the paper.""",
        """## Exercise

How many correlation channels (per level $p$ = 1, 2, 3) does the first squeezing layer of each
level receive for ResNet101 with `layers="deep"`? Answer with a tuple `(n1, n2, n3)`.""",
        """answer = None  # e.g. (4, 23, 3)
check_answer("09-deep-channels", answer)""",
        title="Table S2: which layers (mIoU)")

    notebook(
        "10", "table_s3_levels", "S3",
        r"""# 10 · Table S3: which pyramid levels? $\mathcal{C}^{(3)}$, $\mathcal{C}^{(2:3)}$ and $\mathcal{C}$

**After this notebook you will understand** what each pyramid level contributes.

Definitions (main paper Fig. 7, supplementary Table S3, FACTS.md): $\mathcal{C}^{(3)}$ uses only the
coarsest level $p = 3$ (13x13 correlations for ResNet at 400x400), $\mathcal{C}^{(2:3)}$ levels 2 and
3, $\mathcal{C}$ all three. The missing levels' squeezing and mixing blocks are simply absent, so
the decoder works at the finest level used (`levels=` in `HSNet`, `--levels` in the trainer).
Paper (ResNet101, 1-shot / 5-shot): 55.5 / 61.6, 63.9 / 68.2, 66.2 / 70.4; the large gap between
$\mathcal{C}^{(3)}$ and $\mathcal{C}^{(2:3)}$ shows how much the intermediate level $p = 2$ matters.""",
        ORDER_CODE.format(shots="(1, 5)"),
        """## What the mini run shows

At 96x96 the embedded images give 12x12, 6x6 and 3x3 correlations for the three levels: with only
$p = 3$ the decoder predicts from a 3x3 query grid, so thin parts are lost.""",
        """## Exercise

How many learnable parameters does `HSNet("resnet101", weights=None, levels=(2, 3))` have?
(Hint: two squeezing blocks, one mixing block, the decoder.)""",
        """answer = None  # an int
check_answer("10-params-levels-23", answer)""",
        title="Table S3: which pyramid levels (mIoU)")

    notebook(
        "11", "table_s4_ignore_label", "S4",
        r"""# 11 · Table S4: scoring with and without the ignore label

**After this notebook you will understand** why the same predictions get a lower score when
boundary pixels are not ignored, and why the paper reports both.

PASCAL VOC marks a thin band around every object outline with label 255 (`ignore_label`): the
boundary is ambiguous even for annotators. Most few-shot papers remove those pixels from prediction
and ground truth before computing the areas (our `FewShotMeter(class_ids, ignore_index=255)`); some
do not, which scores the band as background (`ignore_index=None`). Table S4 re-scores HSNet without
the ignore label (ResNet50: 59.1 / 64.2 mIoU, 73.8 / 77.4 FB-IoU for 1 / 5 shots) against the main
paper's 64.0 / 69.5 and 76.7 / 80.6 with it.

The embedded benchmark gets the same kind of band with `boundary=1` (a 255 ring of about 3 pixels
around the target's outline); the mini mode scores **the same predictions** both ways.""",
        """means = ablations.summarize(records)
drop = {k: round(means[("all", k)] - ablations.summarize(records, "miou_no_ignore")[("all", k)], 1) for k in (1, 5)}
print(f"mini: not ignoring the band costs {drop[1]:.1f} (1-shot) and {drop[5]:.1f} (5-shot) mIoU points (paper: 4.9 and 5.3)")""",
        """## What the mini run shows

Scoring the band as background can only lower the foreground IoU: the band straddles the outline, so
a good prediction covers part of it and those pixels now count as false positives.""",
        """## Exercise

A 1x4 query has ground truth `[1, 255, 0, 0]` and prediction `[1, 1, 0, 0]`. What is the
foreground IoU (in percent) with the ignore label, and without it? Answer with a tuple.""",
        """answer = None  # (with_ignore, without_ignore)
check_answer("11-ignore-label-iou", answer)""",
        metrics=("miou", "miou_no_ignore", "fb_iou", "fb_iou_no_ignore"),
        title="Table S4: with and without ignore_label (mIoU)")

    notebook(
        "12", "no_support_masking", "S14",
        r"""# 12 · Without support feature masking (Fig. S14)

**After this notebook you will understand** how much of HSNet's answer comes from the support mask.

Support feature masking (main paper Eq. 1) multiplies every support feature by the resized support
mask before the correlation, so only the annotated object correlates with the query. Without it
(`use_support_mask=False`, `--no-support-mask`), trained and tested so, the task becomes
co-segmentation: find what query and support have in common. The supplementary's Fig. S14 shows that
HSNet still segments the common object on PASCAL-5i; it gives pictures, not numbers, so the paper
column is empty here.

On the embedded benchmark a query also holds objects of other classes, and so does the support: a
model without the mask must guess which of the shared shapes is meant.""",
        """means = ablations.summarize(records)
for k in (1, 5):
    print(f"{k}-shot: with masking {means[('all', k)]:.1f}, without {means[('nomask', k)]:.1f} mIoU")""",
        """## What the mini run shows

The comparison below is the measured cost of dropping Eq. 1 at mini scale.""",
        """## Exercise

Without masking, does the hypercorrelation of an episode change when its support mask is replaced
by its complement? Answer `True` or `False`, then run the cell.""",
        """answer = None  # True or False
check_answer("12-no-mask-complement", answer)""",
        title="Support feature masking on / off (mIoU)")


if __name__ == "__main__":
    main()
