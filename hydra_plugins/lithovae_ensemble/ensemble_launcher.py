"""The ensemble launcher as Hydra discovers plugins: a class of the ``hydra_plugins`` package.
The implementation is :mod:`lithovae.ensemble.launcher`; the option is
``lithovae/conf/hydra/launcher/ensemble.yaml``."""

from lithovae.ensemble.launcher import EnsembleLauncher as _Implementation


class EnsembleLauncher(_Implementation):
    pass
