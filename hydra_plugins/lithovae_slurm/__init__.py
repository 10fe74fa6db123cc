"""lithovae's Hydra plugins: the SLURM launcher."""
