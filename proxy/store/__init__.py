"""Postgres: the schema and its migrations, orgs and keys, routing rules, budgets, webhooks, rollup SQL.
"""
