"""Intake: how events get in and are never lost — receiver (webhooks) → inbox (durable store)
→ dispatcher (runs zaps on them)."""
