"""The main job end to end (`make demo`): training, export and serving together, so it stands above all three."""
