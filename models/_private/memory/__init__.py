"""The hybrid memory: `HybridMemory` (`hybrid`, where the tier policy is written down), its
records and config (`schema`), metadata filters (`filters`), the tier policy's decisions
(`tiers`), and its write-ahead log entries and snapshots (`persistence`).

Nothing is re-exported here, so that importing the schema does not import FAISS and torch (the
public names are in `models`).
"""
