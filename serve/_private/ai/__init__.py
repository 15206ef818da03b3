"""The OpenAI-compatible AI service: its config (`config`), the request and response shapes
(`protocol`), the HTTP routes of its ingress (`routes`), the serving logic behind them
(`serving`: failover, pricing, streaming, usage), its backends (`backends`) and model
deployments (`deployments`).

Nothing is imported here, so that reading the config does not import FastAPI or Ray.
"""
