"""Storage behind two interfaces: metadata (SQL) and blobs (bytes)."""
