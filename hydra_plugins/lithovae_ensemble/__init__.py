"""lithovae's Hydra plugins: the ensemble launcher."""
