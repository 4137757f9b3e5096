"""HTTP handlers: thin; the logic lives in the managers."""
