"""Forwarding: destinations (plugins) and the loop that delivers the outbox to them."""
