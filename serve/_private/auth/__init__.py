"""Who may call the services, what they may spend, and the record of what they did: API keys
(`keys`), quota windows and leases (`quota`, `leases`, `spending`), the signed audit chain
(`audit`, `audit_route`), the system's key authority actor (`authority`), its config (`config`),
and what each replica runs per request (`middleware`, over its `key_table`).

Nothing is imported here. What `actors` and `models` need of this (the bearer header, the cost
header, the scopes, the usage types) is in `models/_private/core`.
"""
