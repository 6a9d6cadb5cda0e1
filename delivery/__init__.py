"""Progressive delivery: canary rollout with metric-based automatic rollback (local HAProxy backend)."""
