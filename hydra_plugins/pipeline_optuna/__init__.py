"""Hydra sweeper `optuna`: hyperparameter search on current Optuna (see `sweeper`)."""
