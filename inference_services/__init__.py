"""inference_services."""
