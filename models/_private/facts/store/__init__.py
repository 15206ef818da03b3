"""The facts store: `FactStore` (`core`), documents, entities and bi-temporal facts of one
namespace in SQLite.
"""
