"""Rows by header name, shared by the spreadsheet and google_sheets apps: the table (header,
rows, keys, changes), the row models of their actions and triggers, and the steps both run."""
