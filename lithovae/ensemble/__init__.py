"""Ensemble sweeps: ``python -m lithovae.train -m hydra/launcher=ensemble ...``.

The jobs of a sweep that share a model architecture, dataset and data options train together
as one stacked computation (:mod:`lithovae.ensemble.stacked`), and each becomes its own run: its
own run directory, ``metrics.json``, checkpoints and MLflow run (tagged ``launcher=ensemble``).

**What equals a separate run of the same job**

- the initial weights (the model is built after seeding with the job's ``seed``);
- the data split, the scaler and the shuffled order of the training rows (each member draws its
  permutation from the generator a separate run's data module starts from), cut into the same
  mini-batches;
- the feature-mask draws (each member's own mask generator, seeded with its ``seed``);
- beta, alpha, the learning rate and its plateau schedule, early stopping, the checkpoint policy,
  and Adam's update rule (the same formula, per member);
- the validation loss, the evaluation and every metric definition.

**What differs**

- the reparameterisation noise and dropout masks: vmap draws them for all members from the one
  global torch stream, so a member sees other draws than its separate run;
- floating-point rounding: batched matrix products sum in another order;
- ``masked_recon`` is logged for every member when members differ in ``mask.masked_weight``
  (weight 0 for those without it, so their loss is unchanged);
- checkpoints hold weights, epoch, step and history but no optimizer state, so
  ``ckpt_path=`` cannot resume them; evaluation (``lithovae.evaluate``) reads them like any other.

So a member ends with different weights than its separate run: the same training in
distribution, not bit for bit. ``tests/test_ensemble.py`` states the tolerance its metrics
agree within.
"""
