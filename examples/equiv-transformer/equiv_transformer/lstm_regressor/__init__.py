"""Case lstm_regressor: see spec.py."""
