"""Train an FCN on a segmentation dataset.

    python -m model.train --data data/mosaic --out runs/default --variant fcn8s --epochs 30

The data folder declares its classes in DIR/classes.json (or --classes
a,b,c) and is checked first (model.check_data: masks present, sizes, ids,
bands and bit depth). The network takes the data's own bands and bit depth
and normalises them per band with the training split's mean and standard
deviation. Writes into --out: last.keras (every epoch, for --resume),
best.keras (best validation mean IoU), metrics.jsonl + metrics.csv (one row
per epoch) and run.json (settings, data check, input description, classes
and class weights, read by export). The learning rate warms up linearly then
follows a cosine decay, because a fixed 1e-3 was unstable on this task; the
best checkpoint is kept regardless.
"""

from model.training.train import main

if __name__ == "__main__":
  main()
