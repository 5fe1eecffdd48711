"""Runtime: baking avatars into plain per-frame modules (more arrives with the runtime issue)."""
