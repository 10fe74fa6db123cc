"""The SLURM launcher as Hydra discovers plugins: a class of the ``hydra_plugins`` package.
The implementation is :mod:`lithovae.slurm`; the option is ``lithovae/conf/hydra/launcher/slurm.yaml``."""

from lithovae.slurm import SlurmLauncher as _Implementation


class SlurmLauncher(_Implementation):
    pass
