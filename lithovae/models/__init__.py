"""Torch modules: networks plus their loss, returning named loss terms.

One small file per model variant, all sharing :class:`lithovae.models.base.LatentModel`.
Training (optimisers, schedules, logging) lives in :mod:`lithovae.plan`, data in
:mod:`lithovae.data`.
"""
