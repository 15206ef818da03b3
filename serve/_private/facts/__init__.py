"""The facts service: its config (`config`), the request and response shapes (`protocol`), the
HTTP routes of its ingress (`routes`), and one namespace's shard with its typed operations
(`shard`).

Nothing is imported here, so that reading the config does not import FastAPI or Ray.
"""
