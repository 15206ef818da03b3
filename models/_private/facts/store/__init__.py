"""The facts store: `FactStore` (`core`: schema, migrations, transactions), documents, entities
and bi-temporal facts of one namespace in SQLite, with one mixin a concern: `documents`, `jobs`,
`entities`, `temporal`, `graph`; `rows` holds what they share.
"""
