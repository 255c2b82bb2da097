"""Does bilinear initialisation of the deconvolutions matter? The upsampling ablation, with seeds and intervals.

    python -m model.ablation --out runs/ablation --figures docs/img

One command, resumable, bounded. The grid is upsampling {bilinear (learned),
bilinear_frozen, random, resize} x variant {fcn32s, fcn8s} x seeds on the
texture mosaics, plus a small-data regime (10 % of the training images, the
same number of steps) for FCN-8s. Every cell trains in this process with
model.train's recipe (same model builder, optimizer, learning-rate schedule,
loss and augmented input), records the validation mean IoU after every epoch,
and is scored on a fresh test set (another generator seed): final-epoch test
mean IoU and a checkerboard measure of the predicted probability maps. Each
finished cell is one JSON file under OUT/cells/, written atomically, so an
interrupted run resumes where it stopped and a second invocation re-runs
nothing. After every cell the table (OUT/ablation.md, OUT/ablation.json) is
rewritten; the figures are drawn at the end (or alone with --report_only).

The data is generated under OUT/data/ if absent (model.make_dataset, seed 1
for train/val, seed 2 for test), so the command needs nothing else.

With --data DIR the grid is the decoder comparison on your own dataset
instead, each cell trained by model.train at its defaults
(model.ablation_own_data):

    python -m model.ablation --data data/nuclei --variants fcn8s fcn2s --seeds 0 1 2 --out runs/nuclei_decoders
"""

from model.ablation.cli import main

if __name__ == "__main__":
  main()
