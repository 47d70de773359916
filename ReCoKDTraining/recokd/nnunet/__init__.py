"""nnU-Net v2 integration: networks from plans, student plans, teacher loading, the KD trainer."""
