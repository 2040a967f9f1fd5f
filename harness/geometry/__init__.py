"""The closed-form local stability study command (stabprobe geometry)."""
