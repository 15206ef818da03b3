"""The hybrid memory: `HybridMemory` (`hybrid`, where the tier policy is written down) with its
sweep (`sweeps`) and its log, snapshots and restore (`durability`); its records and config
(`schema`), metadata filters (`filters`), the tier policy's decisions (`tiers`), and the log's
entries and the snapshots' layout (`persistence`).

Nothing is re-exported here, so that importing the schema does not import FAISS and torch (the
public names are in `models`).
"""
