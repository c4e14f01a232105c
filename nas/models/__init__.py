"""Student models, the teacher and weight inheritance. Knows nothing of Optuna, Ray or MLflow."""
