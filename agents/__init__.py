"""The three pipeline programs that docker-compose runs, each also runnable natively:
``python -m agents.dataset`` (build and sign a dataset), ``python -m agents.trainer`` (train on it
through Sentry's verifying loader, sign the checkpoint with its link to the dataset) and
``python -m agents.inferencer`` (verify the checkpoint and its link, serve it over the Open
Inference Protocol v2). They use Sentry's public API only."""
