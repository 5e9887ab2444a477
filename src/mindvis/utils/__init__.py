"""Small shared helpers: errors, atomic writes, seeding."""
