"""Pictures of a finished or running job, drawn from its records (files only, no display)."""
