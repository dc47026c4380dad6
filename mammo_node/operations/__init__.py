"""Looking after a node that runs for years: retention, backup and restore, the doctor."""
