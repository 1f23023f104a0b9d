"""Files in and out: checkpoints and the zoo, images, videos and sources, COCO JSON, atomic writes."""
