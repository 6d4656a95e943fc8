"""Evidence from results: intervals, tables, figures, claims, rendered numbers."""
